"""Learning rules, explicit recurrence, the first-spike loss and stability training (issue 6).

Tiny models, few epochs, one torch thread: the whole file stays well under 90 s.
"""

from __future__ import annotations

import norse.torch as norse
import numpy as np
import pytest
import torch
from norse.torch.functional.lif import LIFFeedForwardState, LIFState, lif_feed_forward_step, lif_step
from snn_deploy import api
from snn_deploy.coding import encode, first_spike_times
from snn_deploy.convert.nirfile import read_nir
from snn_deploy.convert.nirgraph import graph_to_network
from snn_deploy.errors import InputFileError, UserError
from snn_deploy.evaluate.stability import graph_perturbation_ms
from snn_deploy.run.float_backend import run_float
from snn_deploy.train import model as model_mod
from snn_deploy.train.model import LIFNetwork, ModelConfig, load_checkpoint, save_checkpoint
from snn_deploy.train.perturbed import adversarial_values, encode_straight_through
from snn_deploy.train.rules import RULES, fixed_feedback
from snn_deploy.train.stability import membrane_perturbation, perturbation_ms

TINY = dict(dataset="digits", encoding="rate", steps=8, seed=0, lr=1e-2, batch_size=128)


pytestmark = pytest.mark.usefixtures("one_thread")


def _mismatch(got: np.ndarray, expected: np.ndarray) -> str:
    where = np.argwhere(got != expected)
    return f"{len(where)} spikes differ, first (t, b, n): {where[:5].tolist()}"


# --- the LIF step against Norse 1.1.0 ---------------------------------------------------------

def test_lif_step_equals_norse_feed_forward_and_recurrent_steps():
    """Our step is Norse's: feed-forward as lif_feed_forward_step, with R as lif_step, whose
    recurrent input R z_{t-1} enters the current of the same step (no extra delay)."""
    torch.manual_seed(0)
    p = norse.LIFParameters()
    w, r = torch.randn(6, 5) * 2, torch.randn(6, 6)
    x = (torch.rand(15, 3, 5) < 0.5).float()
    zero = torch.zeros(3, 6)
    ours = model_mod.LIFState(i=zero, v=zero, z=zero)
    ours_rec = ours
    ff = LIFFeedForwardState(v=zero, i=zero)
    rec = LIFState(z=zero, v=zero, i=zero)
    spiked = 0
    for x_t in x:
        z_ff, ff = lif_feed_forward_step(x_t @ w.T, ff, p, dt=1e-3)
        ours, _ = model_mod.lif_step(x_t @ w.T, ours, p, 1e-3)
        assert torch.equal(ours.z, z_ff) and torch.equal(ours.v, ff.v) and torch.equal(ours.i, ff.i)
        z_rec, rec = lif_step(x_t, rec, w, r, p, dt=1e-3)
        ours_rec, _ = model_mod.lif_step(x_t @ w.T + ours_rec.z @ r.T, ours_rec, p, 1e-3)
        torch.testing.assert_close(ours_rec.v, rec.v, rtol=0, atol=1e-5)  # sums associate differently
        assert torch.equal(ours_rec.z, z_rec)
        spiked += int(z_rec.sum())
    assert spiked > 0


# --- explicit recurrence ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def recurrent_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recurrent")
    result = api.train(hidden=(20,), epochs=3, recurrent=True, **TINY)
    ckpt = folder / "rec.pt"
    save_checkpoint(result.model, ckpt)
    nir_path = folder / "rec.nir"
    api.export(ckpt, nir_path)
    return {"result": result, "checkpoint": ckpt, "nir": nir_path}


def test_recurrent_model_trains_and_round_trips(recurrent_files):
    result = recurrent_files["result"]
    assert result.test_accuracy > 0.4  # chance is 0.1
    model = load_checkpoint(recurrent_files["checkpoint"])
    assert model.config.recurrent and len(model.recurrent) == 1
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_recurrent_model_exports_a_nir_cycle_and_the_float_backend_equals_it(recurrent_files,
                                                                             digits):
    model = load_checkpoint(recurrent_files["checkpoint"])
    graph = read_nir(recurrent_files["nir"])
    assert ("1", "1_rec") in graph.edges and ("1_rec", "1") in graph.edges
    network = graph_to_network(graph)
    assert network.layers[0].recurrent_synapse == "1_rec" and network.layers[1].recurrent is None
    np.testing.assert_array_equal(network.layers[0].recurrent,
                                  model.recurrent[0].weight.detach().numpy())
    x = encode(digits.x_test[:100], encoding="rate", steps=8, seed=5)
    with torch.no_grad():
        expected = model(x).numpy().astype(np.uint8)
        no_loop = LIFNetwork(model.config)
        no_loop.load_state_dict(model.state_dict())
        no_loop.recurrent[0].weight.zero_()
        cut = no_loop(x).numpy().astype(np.uint8)
    got = run_float(network, x).recording.output
    assert expected.sum() > 0
    assert np.array_equal(got, expected), _mismatch(got, expected)
    assert not np.array_equal(cut, expected), "the trained recurrent weights change nothing"


@pytest.mark.slow
def test_recurrent_deployment_runs_identically_on_emulator_and_lava(recurrent_files, digits):
    from snn_deploy.run.emulator import run_emulator
    from snn_deploy.run.lava_sim import run_lava_sim

    dep = api.deploy(recurrent_files["nir"], profile="loihi2", dataset="digits").deployment
    assert dep.layers[0].recurrent is not None
    x = encode(digits.x_test[:4], encoding="rate", steps=8, seed=6).numpy()
    emu, lava = run_emulator(dep, x), run_lava_sim(dep, x)
    assert emu.output.sum() > 0
    assert np.array_equal(emu.output, lava.output), _mismatch(emu.output, lava.output)
    for a, b in zip(emu.counts, lava.counts):
        np.testing.assert_array_equal(a, b)


# --- learning rules ---------------------------------------------------------------------------

def _grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[float]:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [0.0 if g is None else float(g.abs().sum()) for g in grads]


@pytest.mark.parametrize("rule", ["decolle", "eprop"])
def test_local_rules_stop_gradients_between_layers(rule):
    torch.manual_seed(0)
    model = LIFNetwork(ModelConfig(input_size=10, hidden=(8, 7), output_size=3, steps=12,
                                   recurrent=True))
    weights = [s.weight for s in model.synapses]
    with torch.no_grad():  # strong enough that every layer spikes
        for w in weights:
            w.mul_(6.0)
    x = (torch.rand(12, 5, 10) < 0.6).float()
    y = torch.tensor([0, 1, 2, 0, 1])
    feedback = fixed_feedback(model, seed=1)
    local = RULES[rule](model, x, y, decoder="spike_count", beta=1.0, feedback=feedback)
    full = RULES["bptt"](model, x, y, decoder="spike_count", beta=1.0, feedback=feedback)
    assert all(z.sum() > 0 for z in full.trace.spikes), [int(z.sum()) for z in full.trace.spikes]
    # each layer's term reaches its own weights only; the task loss under BPTT reaches them all
    for k, term in enumerate(local.layer_terms):
        g = _grads(term, weights)
        assert g[k] > 0, f"layer {k}'s own term has no gradient"
        assert [v for j, v in enumerate(g) if j != k] == [0.0] * 2, f"layer {k}'s term: {g}"
    assert all(v > 0 for v in _grads(full.task, weights))
    # the recurrent weights learn from their layer's term, but the task gradient does not reach
    # layer 0's loop under a local rule
    rec = [model.recurrent[0].weight, model.recurrent[1].weight]
    assert _grads(local.layer_terms[0], rec)[0] > 0
    assert _grads(local.task, rec) == [0.0, 0.0]


def test_decolle_trains_above_chance():
    result = api.train(hidden=(24,), epochs=4, rule="decolle", **TINY)
    assert result.history[-1].loss < result.history[0].loss
    assert result.test_accuracy > 0.4  # chance is 0.1


# --- first-spike decoding ---------------------------------------------------------------------

def test_soft_first_spike_time_is_the_first_spike_and_its_gradient_is_t_minus_t_first():
    z = torch.zeros(6, 1, 3)
    z[3, 0, 0] = z[4, 0, 0] = 1.0  # first spike at 3
    z[0, 0, 1] = 1.0  # at 0; neuron 2 never fires -> T
    z.requires_grad_(True)
    t = first_spike_times(z)
    assert t.tolist() == [[3.0, 0.0, 6.0]]
    (g,) = torch.autograd.grad(t[0, 0], z)
    # d t / d z_t = t - 3 before the first spike, 3 - 4 (next spike) at it, 0 after it
    assert g[:, 0, 0].tolist() == [-3.0, -2.0, -1.0, -1.0, 0.0, 0.0]


def test_first_spike_loss_trains_and_records_its_decoder(tmp_path):
    result = api.train(hidden=(24,), epochs=3, loss="first_spike", decoder_beta=0.5, **TINY)
    assert result.test_accuracy > 0.4
    assert result.model.config.decoder == "first_spike"
    save_checkpoint(result.model, tmp_path / "fs.pt")
    payload = torch.load(tmp_path / "fs.pt", weights_only=True)
    assert payload["config"]["decoder"] == "first_spike"
    assert payload["config"]["decoder_beta"] == 0.5
    api.export(tmp_path / "fs.pt", tmp_path / "fs.nir")
    coding = graph_to_network(read_nir(tmp_path / "fs.nir")).coding
    assert coding.decoder.name == "first_spike" and coding.decoder.beta == 0.5


def test_checkpoints_without_new_keys_load_and_unknown_decoders_are_refused():
    old = {"input_size": 4, "hidden": [3], "output_size": 2}
    cfg = ModelConfig.from_dict(old)
    assert not cfg.recurrent and cfg.decoder == "spike_count"
    with pytest.raises(InputFileError, match="decoder 'max_voltage'"):
        ModelConfig.from_dict({**old, "decoder": "max_voltage"})


# --- stability ----------------------------------------------------------------------------------

def test_membrane_perturbation_follows_the_membrane_leak():
    clean = torch.zeros(4, 1, 1)
    pert = torch.zeros(4, 1, 1)
    pert[0] = -2.0  # one impulse of current difference 2 at step 0
    y = membrane_perturbation(clean, pert, keep=0.9, gain=0.1)
    np.testing.assert_allclose(y.flatten().numpy(), [0.2, 0.18, 0.162, 0.1458], rtol=1e-6)


def test_perturbation_ms_of_a_model_equals_that_of_its_graph(recurrent_files, digits):
    model = load_checkpoint(recurrent_files["checkpoint"])
    network = graph_to_network(read_nir(recurrent_files["nir"]))
    x = digits.x_test[:50]
    clean = encode(x, encoding="rate", steps=8, seed=3)
    noisy = encode((x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
                   .clamp(0, 1), encoding="rate", steps=8, seed=3)
    ms = perturbation_ms(model, clean, noisy)
    assert np.isfinite(ms) and ms > 0
    assert perturbation_ms(model, clean, clean) == 0.0
    assert graph_perturbation_ms(network, clean, noisy) == pytest.approx(ms, rel=1e-4)


def test_the_perturbation_regulariser_lowers_the_membrane_perturbation(digits):
    """Same seed, same noise training; only alpha differs."""
    x = digits.x_test[:200]
    clean = encode(x, encoding="rate", steps=8, seed=3)
    noisy = encode((x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
                   .clamp(0, 1), encoding="rate", steps=8, seed=3)
    ms = {}
    for alpha in (0.0, 100.0):
        result = api.train(hidden=(24,), epochs=3, noise_sigma=0.2, perturbation_weight=alpha,
                           **TINY)
        assert result.history[-1].perturbation_ms is not None
        ms[alpha] = perturbation_ms(result.model, clean, noisy)
    assert ms[100.0] < 0.5 * ms[0.0], ms


def test_straight_through_encoder_and_fgsm_values():
    x = torch.rand(4, 6, requires_grad=True)
    s = encode_straight_through(x, encoding="rate", steps=5, seed=2)
    assert torch.equal(s, encode(x.detach(), encoding="rate", steps=5, seed=2))
    (g,) = torch.autograd.grad((s * torch.arange(5.0).view(5, 1, 1)).sum(), x)
    assert torch.equal(g, torch.full((4, 6), 10.0))  # sum_t t
    torch.manual_seed(0)
    model = LIFNetwork(ModelConfig(input_size=6, hidden=(5,), output_size=3, steps=5))
    y = torch.tensor([0, 1, 2, 0])
    adv = adversarial_values(lambda sp: model(sp).sum(0) + sp.mean(0) @ torch.ones(6, 3),
                             x.detach(), y, kind="fgsm", eps=0.1, steps=1, encoding="rate",
                             time_steps=5, seed=2, generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x.detach())


def test_fgsm_training_runs_and_reports_the_perturbation():
    result = api.train(hidden=(16,), epochs=1, adversarial="fgsm", eps=0.1, kappa=0.5,
                       perturbation_weight=1.0, **TINY)
    ms = result.history[0].perturbation_ms
    assert ms is not None and np.isfinite(ms) and ms > 0


@pytest.mark.parametrize("bad, match", [
    ({"rule": "sgd"}, "unknown rule 'sgd'"),
    ({"loss": "mse"}, "unknown loss 'mse'"),
    ({"adversarial": "cw"}, "unknown adversarial training 'cw'"),
    ({"kappa": 1.5}, "kappa must lie in"),
    ({"noise_sigma": -0.1}, "must be >= 0"),
    ({"adversarial": "fgsm", "eps": 0.0}, "eps must lie in"),
    ({"adversarial": "pgd", "attack_steps": 0}, "attack steps"),
    ({"noise_sigma": 0.1, "adversarial": "fgsm"}, "not both"),
    ({"perturbation_weight": 1.0}, "perturbed pass"),
    ({"decoder_beta": 0.0}, "decoder beta"),
    ({"eps": float("nan"), "adversarial": "fgsm"}, "finite"),
])
def test_bad_training_options_raise_user_errors(bad, match):
    with pytest.raises(UserError, match=match):
        api.train(hidden=(4,), epochs=1, **{**TINY, **bad})


def test_cli_train_options_and_first_spike_evaluation(tmp_path):
    from tests.factories import assert_bad_input, assert_ok, run_cli

    ckpt = tmp_path / "fs.pt"
    proc = run_cli("train", "--loss", "first_spike", "--recurrent", "--rule", "decolle",
                   "--hidden", "16", "--steps", "8", "--epochs", "1", "--out", ckpt, cwd=tmp_path)
    assert_ok(proc)
    assert "recurrent LIF network (decolle, first_spike loss" in proc.stdout
    proc = run_cli("evaluate", ckpt, "--limit", "20", "--json", tmp_path / "e.json", cwd=tmp_path)
    assert_ok(proc)
    assert_bad_input(run_cli("train", "--adversarial", "trades", "--out", tmp_path / "t.pt",
                             cwd=tmp_path), "trades")
    assert_bad_input(run_cli("train", "--ann", "--recurrent", "--out", tmp_path / "t.pt",
                             cwd=tmp_path), "--recurrent")
    assert not (tmp_path / "t.pt").exists()

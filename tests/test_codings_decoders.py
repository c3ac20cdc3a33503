"""Fusion coding, the first-spike and max-membrane decoders on every backend and under attack, and
the auto initialisation (issue 6; docs/coding.md).

Tiny models and few samples; the Lava runs are real (marked slow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from snn_deploy import api
from snn_deploy.attack.base import AttackSettings, FrozenEncoder
from snn_deploy.attack.sources import make_source
from snn_deploy.coding import (
    FUSION_PARTS,
    Coding,
    DecoderSpec,
    burst_first_encode,
    channels,
    decoder_predict,
    encode,
    encode_with_uniforms,
    encoded_width,
    fold_channels,
    latency_encode,
    rate_encode,
    straight_through_values,
)
from snn_deploy.errors import UserError
from snn_deploy.evaluate import accuracy
from snn_deploy.evaluate.accuracy import evaluate_target, recording_logits
from snn_deploy.evaluate.robustness import Evaluator, SourceSpec, sweep
from snn_deploy.profiles import load_profile
from snn_deploy.quantize.deployment import save_deployment
from snn_deploy.quantize.fixed_point import quantize_network
from snn_deploy.run.membrane import MembraneEmulator
from snn_deploy.run.twin import EmulatorTwin
from snn_deploy.targets import load_target
from snn_deploy.train.init import SILENT_BELOW, wake_silent_layers
from snn_deploy.train.model import LIFNetwork, ModelConfig, save_checkpoint
from snn_deploy.train.perturbed import encode_straight_through

from tests.factories import assert_bad_input, assert_ok, random_network, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


# --- fusion coding ------------------------------------------------------------------------------

def test_fusion_stacks_rate_latency_and_burst_first_in_that_order():
    x = torch.rand(5, 7, generator=torch.Generator().manual_seed(0))
    s = encode(x, encoding="fusion", steps=6, seed=3)
    assert FUSION_PARTS == ("rate", "latency", "burst-first")
    assert s.shape == (6, 5, 21) and s.dtype == torch.float32
    assert channels("fusion") == 3 and encoded_width("fusion", 64) == 192
    assert channels("rate") == 1 and encoded_width("latency", 64) == 64
    assert torch.equal(s[..., :7], rate_encode(x, steps=6, seed=3))  # the same draws as rate
    assert torch.equal(s[..., 7:14], latency_encode(x, steps=6, seed=3))
    assert torch.equal(s[..., 14:], burst_first_encode(x, steps=6, seed=3))
    assert not torch.equal(s[..., :7], encode(x, encoding="fusion", steps=6, seed=4)[..., :7])
    assert torch.equal(s[..., 7:], encode(x, encoding="fusion", steps=6, seed=4)[..., 7:])
    uniforms = torch.rand((6, 5, 7), generator=torch.Generator().manual_seed(3))
    assert torch.equal(encode_with_uniforms(x, uniforms, encoding="fusion", steps=6), s)
    with pytest.raises(UserError, match="draws no random numbers"):
        encode_with_uniforms(x, uniforms, encoding="latency", steps=6)


def test_frozen_fusion_encoder_reproduces_evaluate_and_its_gradient_folds_the_channels(digits):
    x = digits.x_test[:40]
    expected = torch.cat(list(accuracy.encoded_batches(x, encoding="fusion", steps=5, seed=2)),
                         dim=1)
    enc = FrozenEncoder("fusion", steps=5, seed=2, n_samples=40, n_inputs=64)
    assert enc.stochastic and enc.binary
    idx = torch.tensor([31, 4])
    assert torch.equal(enc.spikes(x, torch.arange(40)), expected)
    assert torch.equal(enc.spikes(x[idx], idx), expected[:, idx])
    w = torch.rand((5, 2, 192), generator=torch.Generator().manual_seed(1))
    folded = w.sum(dim=0).reshape(2, 3, 64).sum(dim=1)  # sum over steps, then over the 3 channels
    torch.testing.assert_close(fold_channels(w.sum(dim=0), encoding="fusion"), folded)
    xa = x[idx].clone().requires_grad_(True)
    (enc.differentiable(xa, idx) * w).sum().backward()
    torch.testing.assert_close(xa.grad, folded)
    xb = x[idx].clone().requires_grad_(True)
    s = encode_straight_through(xb, encoding="fusion", steps=5, seed=9)
    assert torch.equal(s, encode(x[idx], encoding="fusion", steps=5, seed=9))
    (s * w).sum().backward()
    torch.testing.assert_close(xb.grad, folded)
    st = straight_through_values(x[idx], encoding="fusion", steps=5)
    assert st.shape == (5, 2, 192) and torch.equal(st[0, :, 64:128], x[idx])


# --- the max-membrane decoder on the deployed backends ------------------------------------------

def _small_deployment():
    """A 12-9-5 LIF chain on the loihi2 profile, with a nonzero bias on the output layer."""
    network = random_network([12, 9, 5], seed=2, steps=9)
    dep = quantize_network(network, load_profile("loihi2"), graded_input=False, u_peaks=None,
                           source_sha256=hashlib.sha256(b"").hexdigest(), source_nir=b"",
                           calibration="none")
    out = dep.layers[-1]
    bias = np.array([40, -25, 0, 70, -5], dtype=np.int32)
    out = dataclasses.replace(out, bias_mant=bias, bias_exp=np.full(5, 3, dtype=np.int32))
    return dataclasses.replace(dep, layers=(*dep.layers[:-1], out))


@pytest.mark.slow
def test_pre_reset_membrane_is_the_same_on_emulator_lava_and_twin():
    from snn_deploy.run.lava_sim import run_lava_sim_membrane

    dep = _small_deployment()
    x = (np.random.default_rng(5).random((9, 4, 12)) < 0.4).astype(np.float32)
    emu = MembraneEmulator(dep).run(x)
    lava = run_lava_sim_membrane(dep, x)
    twin = EmulatorTwin(dep)(torch.from_numpy(x))
    assert emu.membrane is not None and lava.membrane is not None and twin.membrane is not None
    assert emu.membrane.shape == (9, 4, 5)
    assert emu.output.sum() > 0 and len(np.unique(emu.membrane)) > 20, "the test must be non-trivial"
    where = np.argwhere(emu.membrane != lava.membrane)
    assert not len(where), f"{len(where)} membrane values differ, first (t, b, c): {where[:5]}"
    np.testing.assert_array_equal(emu.output, lava.output)
    np.testing.assert_array_equal(twin.membrane.detach().numpy(), emu.membrane)
    # the membrane is what the threshold sees: a spike exactly where it exceeds 1 (v > vth << 6)
    np.testing.assert_array_equal(emu.output.astype(bool), emu.membrane > 1)
    out = torch.from_numpy(emu.output.astype(np.float32))
    for rec in (emu, lava):
        pred = decoder_predict(out, decoder="max_membrane", membrane=torch.from_numpy(rec.membrane))
        assert torch.equal(pred, torch.from_numpy(emu.membrane).amax(dim=0).argmax(dim=1))


TRAIN = dict(dataset="digits", hidden=(16,), encoding="rate", steps=8, epochs=2, seed=0, lr=1e-2,
             batch_size=128)


def _deployed(folder, name: str, **options) -> dict:
    result = api.train(**{**TRAIN, **options})
    ckpt = folder / f"{name}.pt"
    save_checkpoint(result.model, ckpt)
    api.export(ckpt, folder / f"{name}.nir")
    dep = folder / f"{name}.deploy.h5"
    save_deployment(api.deploy(folder / f"{name}.nir", profile="loihi2",
                               dataset="digits").deployment, dep)
    return {"result": result, "checkpoint": ckpt, "deployment": dep}


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """A first-spike and a max-membrane model, trained, exported and deployed to loihi2."""
    folder = tmp_path_factory.mktemp("decoders")
    return {"first_spike": _deployed(folder, "fs", loss="first_spike", decoder_beta=0.5,
                                     hidden=(24,), epochs=3),
            "max_membrane": _deployed(folder, "mm", loss="max_membrane", decoder_beta=4.0,
                                      encoding="fusion")}


def test_decoder_and_beta_travel_to_the_deployment(decoded):
    for name, beta in (("first_spike", 0.5), ("max_membrane", 4.0)):
        assert decoded[name]["result"].test_accuracy > 0.4, name  # chance is 0.1
        coding = load_target(decoded[name]["deployment"]).coding
        assert coding.decoder == DecoderSpec(name, beta)
    assert load_target(decoded["max_membrane"]["deployment"]).coding.encoding == "fusion"
    with pytest.raises(UserError, match="file.nir: unknown decoder 'max_voltage'"):
        Coding.read({"decoder": "max_voltage"}, where="file.nir")
    with pytest.raises(UserError, match="file.nir: decoder beta must be finite and > 0"):
        Coding.read({"decoder": "first_spike", "decoder_beta": -1.0}, where="file.nir")


@pytest.mark.slow
def test_max_membrane_model_evaluates_identically_on_emulator_and_lava(decoded, digits):
    target = load_target(decoded["max_membrane"]["deployment"])
    emu = evaluate_target(target, digits, backend="emulator", limit=24, seed=1)
    lava = evaluate_target(target, digits, backend="lava-sim", limit=24, seed=1)
    np.testing.assert_array_equal(emu.predictions, lava.predictions)
    assert emu.accuracy == lava.accuracy > 0.4
    assert emu.activity == lava.activity


# --- gradient sources and attacks under each decoder --------------------------------------------

@pytest.mark.parametrize("decoder", ["first_spike", "max_membrane"])
def test_sources_give_the_decoders_logits_with_gradients(decoded, digits, decoder):
    target = load_target(decoded[decoder]["deployment"])
    ev = Evaluator(target, digits, backend="emulator", limit=12, seed=0)
    s = ev.clean_spikes()
    rec = MembraneEmulator(ev.dep).run(s) if decoder == "max_membrane" else \
        accuracy.run_backend(target, "emulator", [s])
    exact = recording_logits(rec, ev.decoder)
    assert torch.equal(ev.spike_oracle(s, ev.idx), exact)
    for kind in ("twin", "bptr", "float"):
        source = make_source(kind, target)
        sg = s.clone().requires_grad_(True)
        z = source.spike_logits(sg)
        if kind != "float":  # twin and bptr forward the exact Deployment
            torch.testing.assert_close(z.detach(), exact, rtol=0, atol=1e-5)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(z, ev.y), sg)
        assert float(g.abs().sum()) > 0, f"{kind}: zero gradient under {decoder}"


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["first_spike", "max_membrane"])
def test_attack_is_verified_with_the_decoder_and_lava_equals_the_emulator(decoded, digits,
                                                                          decoder):
    target = load_target(decoded[decoder]["deployment"])
    settings = AttackSettings(iterations=3, seed=0)
    results = {}
    for backend in ("emulator", "lava-sim"):
        ev = Evaluator(target, digits, backend=backend, limit=16, seed=2)
        results[backend] = sweep(ev, attacks=["pgd"], eps=[0.0, 0.15], settings=settings,
                                 sources=[SourceSpec()])
    emu, lava = results["emulator"], results["lava-sim"]
    assert emu.decoder == decoder
    clean = evaluate_target(target, digits, backend="emulator", limit=16, seed=2)
    assert emu.clean_accuracy == clean.accuracy == lava.clean_accuracy > 0.3
    for a, b in zip(emu.rows, lava.rows):
        assert a.robust_accuracy == b.robust_accuracy
        assert a.agreement == b.agreement == 1.0  # the twin's logits are the backend's decoder
        np.testing.assert_array_equal(a.correct, b.correct)
    assert emu.rows[-1].robust_accuracy < emu.clean_accuracy
    assert emu.float_agreement is not None and emu.float_agreement >= 0.8


def test_membrane_decoder_is_refused_on_loihi2(decoded, digits):
    with pytest.raises(UserError, match="records spikes only"):
        Evaluator(load_target(decoded["max_membrane"]["deployment"]), digits, backend="loihi2",
                  limit=4, seed=0)


@pytest.mark.slow
def test_cli_attack_on_a_first_spike_deployment(decoded, tmp_path):
    proc = run_cli("attack", decoded["first_spike"]["deployment"], "--attack", "fgsm,square",
                   "--queries", "20", "--eps", "0,0.2", "--limit", "10", "--source", "twin,bptr",
                   "--json", tmp_path / "a.json", cwd=tmp_path)
    assert_ok(proc)
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["decoder"] == "first_spike"
    rows = [r for r in report["results"] if r["eps"] == 0.2]
    assert {r["source"] for r in rows} == {"twin[fast_sigmoid,0.5]", "bptr", "-"}
    # FGSM through the first-spike decoder's logits fails the backend on some samples
    assert min(r["robust_accuracy"] for r in rows if r["attack"] == "fgsm") < report["clean_accuracy"]
    checks = {c["check"]: c["passed"] for c in report["diagnostics"]}
    assert checks["robust accuracy <= clean accuracy"] is True
    assert checks["adversarial examples re-evaluated on the target backend"] is True


# --- the auto initialisation --------------------------------------------------------------------

def _activity(model: LIFNetwork, spikes: torch.Tensor) -> float:
    with torch.no_grad():
        z = model.trace(spikes).spikes[0]
    return float(z.sum(dim=(0, 2)).mean()) / z.shape[2]


def test_auto_init_wakes_a_silent_latency_layer_and_then_bptt_trains(digits):
    config = ModelConfig(input_size=64, hidden=(32,), output_size=10, encoding="latency", steps=16)
    torch.manual_seed(0)
    model = LIFNetwork(config)
    spikes = encode(digits.x_train[:256], encoding="latency", steps=16, seed=0)
    assert _activity(model, spikes) < SILENT_BELOW  # the default init leaves it silent
    gains = wake_silent_layers(model, spikes)
    assert gains[0] > 1 and _activity(model, spikes) >= SILENT_BELOW
    options = dict(dataset="digits", hidden=(32,), encoding="latency", steps=16, epochs=5, seed=0,
                   lr=1e-2, batch_size=64)
    auto = api.train(**options, init="auto")
    default = api.train(**options, init="default")
    assert auto.init_gains[0] > 1 and default.init_gains == ()
    assert auto.test_accuracy > 0.7 and auto.test_accuracy > default.test_accuracy + 0.1, \
        (auto.test_accuracy, default.test_accuracy)


def test_auto_init_leaves_a_firing_rate_model_alone():
    options = dict(dataset="digits", hidden=(32,), encoding="rate", steps=16, epochs=1, seed=3,
                   lr=2e-3, batch_size=64)
    auto, default = api.train(**options, init="auto"), api.train(**options, init="default")
    assert auto.init_gains == (1.0,)
    for key, value in default.model.state_dict().items():
        assert torch.equal(auto.model.state_dict()[key], value), key


def test_gradient_retuning_refuses_a_non_count_decoder(decoded, tmp_path):
    nir_path = decoded["first_spike"]["deployment"].parent / "fs.nir"
    for mode in ("grad", "robust"):
        out = tmp_path / f"{mode}.deploy.h5"
        assert_bad_input(run_cli("deploy", nir_path, "--dataset", "digits", "--retune", mode,
                                 "--out", out, cwd=tmp_path), "first_spike")
        assert not out.exists()

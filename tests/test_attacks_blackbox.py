"""Square, random noise and the spike-train attacks, against the real emulator of a trained model.

Invariants: outputs inside the threat model (eps-ball and [0, 1]; binary spikes, at most eps flips,
spike counts kept and moves within eps steps); the query budget holds; the same seed gives the same
result, for a sample alone or in any batch; and the attacks can fail the backend, more than random
noise at the same eps does. (eps = 0 returning the input bit for bit is tested for every registered
attack in tests/test_attack.py.)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from snn_deploy.attack.base import Attack, AttackContext, AttackSettings, FrozenEncoder, margin
from snn_deploy.attack.draws import SampleStreams
from snn_deploy.attack.noise import GAUSSIAN, UNIFORM, gaussian_delta, uniform_delta
from snn_deploy.attack.sources import TwinSource
from snn_deploy.attack.spikes import SPIKE_FLIP, SPIKE_JITTER
from snn_deploy.attack.square import P_INIT, SQUARE, Grid, eta, p_schedule
from snn_deploy.errors import UserError
from snn_deploy.run.emulator import Emulator
from snn_deploy.targets import load_target

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 12  # the fixture model's time steps
N = 40  # test samples attacked


@dataclasses.dataclass
class Bench:
    dep: object
    source: TwinSource
    encoder: FrozenEncoder
    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    queries: dict[int, int]  # oracle calls per sample index, over the module

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        """The backend's decoder: output spike counts of a fresh emulator run."""
        return torch.as_tensor(Emulator(self.dep).run(s).output.astype(np.float32).sum(axis=0))

    def oracle(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self.spike_oracle(self.encoder.spikes(x, idx), idx)

    def spike_oracle(self, s: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        for i in idx.tolist():
            self.queries[i] = self.queries.get(i, 0) + 1
        return self.logits(s)

    def context(self, encoder: FrozenEncoder | None = None, **settings) -> AttackContext:
        self.queries.clear()
        return AttackContext(source=self.source, encoder=encoder or self.encoder,
                             settings=AttackSettings(**settings), oracle=self.oracle,
                             spike_oracle=self.spike_oracle)

    def correct(self, x: torch.Tensor, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.logits(self.encoder.spikes(x, idx)).argmax(dim=1) == y

    def spikes(self) -> torch.Tensor:
        return self.encoder.spikes(self.x, self.idx)


@pytest.fixture(scope="module")
def bench(small_model_files, digits):
    dep = load_target(small_model_files["deployment"]).deployment
    encoder = FrozenEncoder("rate", steps=STEPS, seed=0, n_samples=len(digits.x_test),
                            n_inputs=digits.n_inputs)
    return Bench(dep=dep, source=TwinSource(dep), encoder=encoder, x=digits.x_test[:N],
                 y=digits.y_test[:N], idx=torch.arange(N), queries={})


def _assert_in_ball(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
    worst = int(size.argmax())
    assert float(size[worst]) <= eps * (1 + 1e-5), f"sample {worst}: |delta| {float(size[worst])} > {eps}"


# --- analytic pieces of Square ---------------------------------------------------------------

def test_p_schedule_halves_at_the_papers_iterations():
    assert p_schedule(0, 10_000) == P_INIT and p_schedule(10, 10_000) == P_INIT
    assert p_schedule(11, 10_000) == P_INIT / 2 and p_schedule(51, 10_000) == P_INIT / 4
    assert p_schedule(9_999, 10_000) == P_INIT / 512
    assert p_schedule(1, 100) == P_INIT / 4  # rescaled: iteration 1 of 100 is 100 of 10,000


def test_windows_and_l2_bump():
    assert Grid.of(64) == Grid(8, 8) and Grid.of(10) == Grid(1, 10)
    assert Grid(8, 8).linf_window(P_INIT) == (7, 7)  # round(sqrt(0.8 * 64)), at most h - 1
    assert Grid(1, 10).linf_window(0.25) == (1, 2)
    assert Grid(8, 8).l2_side(0.01) == 3 and Grid(8, 8).l2_side(0.5) == 7  # >= 3, odd
    win = Grid(8, 8).window(2, 3, torch.tensor([0.0, 0.999]), torch.tensor([0.0, 0.999]))
    assert win[0].tolist() == [0, 1, 2, 8, 9, 10] and win[1].tolist() == [53, 54, 55, 61, 62, 63]
    e = eta(5)
    assert math.isclose(float(e.norm()), 1.0, rel_tol=1e-6)
    assert (e[:2] > 0).all() and (e[2:] < 0).all() and float(e[0, 2]) == float(e[0].max())


# --- Square -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.15), ("l2", 1.0)])
def test_square_stays_in_the_ball_and_keeps_the_budget(bench, norm, eps):
    ctx = bench.context(norm=norm, queries=30, seed=3)
    x_adv = SQUARE.run(ctx, bench.x, bench.y, bench.idx, eps)
    _assert_in_ball(x_adv, bench.x, eps, norm)
    assert max(bench.queries.values()) <= 30 and ctx.queries_used == sum(bench.queries.values())
    clean_wrong = (~bench.correct(bench.x, bench.idx, bench.y)).nonzero()[:, 0].tolist()
    assert clean_wrong and all(bench.queries[i] == 1 for i in clean_wrong)  # stopped at once
    assert torch.equal(x_adv[clean_wrong], bench.x[clean_wrong])


def test_square_fails_the_backend_more_than_noise(bench):
    ok = bench.correct(bench.x, bench.idx, bench.y)
    x, y, idx = bench.x[ok][:24], bench.y[ok][:24], bench.idx[ok][:24]
    eps = 0.2
    x_adv = SQUARE.run(bench.context(queries=150, seed=0), x, y, idx, eps)
    _assert_in_ball(x_adv, x, eps, "linf")
    square_acc = float(bench.correct(x_adv, idx, y).float().mean())
    noise = UNIFORM.run(bench.context(seed=0), x, y, idx, eps)
    noise_acc = float(bench.correct(noise, idx, y).float().mean())
    assert square_acc <= 0.75, f"square left {square_acc:.0%} of 24 correct samples correct"
    assert square_acc < noise_acc, f"square {square_acc:.0%} vs uniform noise {noise_acc:.0%}"


def test_square_is_deterministic_and_batch_independent(bench):
    run = lambda seed, sel: SQUARE.run(bench.context(queries=20, seed=seed),  # noqa: E731
                                       bench.x[sel], bench.y[sel], bench.idx[sel], 0.1)
    every = torch.arange(12)
    first = run(5, every)
    assert torch.equal(first, run(5, every))
    assert not torch.equal(first, run(6, every))
    some = torch.tensor([7, 2, 9])
    assert torch.equal(run(5, some), first[some])


def test_square_on_a_signal_and_its_refusals():
    """A 1-D input (n = 10, not a square) and a linear "backend": windows are runs of coordinates."""
    w = torch.linspace(-1, 1, 10)[None, :] * torch.tensor([[1.0], [-1.0]])  # 2 classes
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((16, 10), generator=gen)
    y = (x @ w.T).argmax(dim=1)
    ctx = AttackContext(source=None, encoder=None, settings=AttackSettings(queries=40),  # type: ignore[arg-type]
                        oracle=lambda xs, i: xs @ w.T, spike_oracle=None)  # type: ignore[arg-type]
    x_adv = SQUARE.run(ctx, x, y, torch.arange(16), 0.3)
    _assert_in_ball(x_adv, x, 0.3, "linf")
    assert ctx.queries_used <= 40 * 16
    assert float(margin(x_adv @ w.T, y).mean()) < float(margin(x @ w.T, y).mean())
    ctx.settings = AttackSettings(norm="l2")
    with pytest.raises(UserError, match="square image"):
        SQUARE.run(ctx, x, y, torch.arange(16), 0.3)


# --- random noise ------------------------------------------------------------------------------

@pytest.mark.parametrize("attack", [UNIFORM, GAUSSIAN], ids=lambda a: a.name)
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.5)])
def test_noise_stays_in_the_ball_and_is_seeded(bench, attack: Attack, norm, eps):
    x_adv = attack.run(bench.context(norm=norm, seed=1), bench.x, bench.y, bench.idx, eps)
    _assert_in_ball(x_adv, bench.x, eps, norm)
    assert not torch.equal(x_adv, bench.x)
    again = attack.run(bench.context(norm=norm, seed=1), bench.x[5:9], bench.y[5:9],
                       bench.idx[5:9], eps)
    assert torch.equal(again, x_adv[5:9])
    draw = uniform_delta if attack is UNIFORM else gaussian_delta
    delta = draw(SampleStreams(bench.idx, seed=1, stream="t"), 64, norm, bench.idx)
    if norm == "l2":  # a random direction scaled to the full budget, before the [0, 1] clip
        torch.testing.assert_close(delta.norm(dim=1), torch.ones(N))
    else:
        assert float(delta.abs().max()) > 1.5 if attack is GAUSSIAN else float(delta.abs().max()) <= 1


def test_noise_restarts_query_the_backend_and_keep_the_worst(bench):
    ctx = bench.context(restarts=4, seed=2)
    x_adv = UNIFORM.run(ctx, bench.x, bench.y, bench.idx, 0.3)
    assert 0 < ctx.queries_used <= 4 * N and max(bench.queries.values()) <= 4
    single = bench.context(restarts=1, seed=2)
    one = UNIFORM.run(single, bench.x, bench.y, bench.idx, 0.3)
    assert single.queries_used == 0 and not bench.queries  # one draw needs no verdict to pick
    m = lambda xs: margin(bench.oracle(xs, bench.idx), bench.y)  # noqa: E731
    assert (m(x_adv) <= m(one)).all() and (m(x_adv) < m(one)).any()


# --- spike-train attacks -----------------------------------------------------------------------

def test_spike_flip_flips_at_most_eps_bits_and_fails_the_backend(bench):
    s = bench.spikes()
    ok = bench.logits(s).argmax(dim=1) == bench.y
    for eps in (3, 24):
        s_adv = SPIKE_FLIP.run(bench.context(iterations=10), s, bench.y, bench.idx, eps)
        assert s_adv.shape == s.shape and ((s_adv == 0) | (s_adv == 1)).all()
        flips = (s_adv != s).sum(dim=(0, 2))
        assert int(flips.max()) <= eps, f"{int(flips.max())} flips > {eps}"
    robust = (bench.logits(s_adv).argmax(dim=1) == bench.y) & ok
    assert float(robust.sum()) <= 0.75 * float(ok.sum()), f"{int(robust.sum())} of {int(ok.sum())}"
    assert SPIKE_FLIP.eps_unit == "spikes flipped per sample"


def _max_shift(a: np.ndarray, b: np.ndarray) -> int:
    """The smallest max |t - t'| over matchings of a's spikes to b's, per channel: sorted order."""
    worst = 0
    for i in range(a.shape[1]):
        for j in range(a.shape[2]):
            ta, tb = np.flatnonzero(a[:, i, j]), np.flatnonzero(b[:, i, j])
            assert len(ta) == len(tb), f"sample {i} channel {j}: {len(ta)} -> {len(tb)} spikes"
            worst = max(worst, int(np.abs(ta - tb).max(initial=0)))
    return worst


def test_spike_jitter_keeps_counts_and_moves_within_eps(bench):
    s = bench.spikes()
    for eps in (1, 3):
        s_adv = SPIKE_JITTER.run(bench.context(iterations=8), s, bench.y, bench.idx, eps)
        assert ((s_adv == 0) | (s_adv == 1)).all() and not torch.equal(s_adv, s)
        assert _max_shift(s.numpy(), s_adv.numpy()) <= eps
    robust = bench.logits(s_adv).argmax(dim=1) == bench.y
    assert robust.sum() < (bench.logits(s).argmax(dim=1) == bench.y).sum()
    assert SPIKE_JITTER.eps_unit == "time steps"


@pytest.mark.parametrize("attack", [SPIKE_FLIP, SPIKE_JITTER], ids=lambda a: a.name)
def test_spike_attacks_refuse_graded_input_and_fractional_eps(bench, attack: Attack, digits):
    direct = FrozenEncoder("direct", steps=STEPS, seed=0, n_samples=N, n_inputs=digits.n_inputs)
    graded = direct.spikes(bench.x, bench.idx)
    with pytest.raises(UserError, match="direct"):
        attack.run(bench.context(encoder=direct), graded, bench.y, bench.idx, 2)
    with pytest.raises(UserError, match="graded values"):
        attack.run(bench.context(), graded, bench.y, bench.idx, 2)
    with pytest.raises(UserError, match="whole number"):
        attack.run(bench.context(), bench.spikes(), bench.y, bench.idx, 1.5)

"""The ``emulator`` backend: a Deployment run with Lava 0.10's fixed-point integer semantics,
vectorised over samples (and over time for the synaptic sums), in torch, on CPU or CUDA.

It reproduces, operation for operation, ``PyDenseModelBitAcc`` (lava/proc/dense/models.py) and
``PyLifResetModelBitAcc`` / ``AbstractPyLifModelFixed`` (lava/proc/lif/models.py), whose
equations are in ``quantize.deployment.QuantLayer``'s docstring; the LIF step is the one of
``run.lif_core``, the Dense here. Time is per layer *local*: the
Dense delay shifts layer l by l steps on Lava, and the lava-sim backend resets every layer at its
own first step of each sample and empties recurrent synapses there (run/lava_sim.py), so in local
time every sample starts from zero state and layer l at step k sees layer l-1's spikes of step k.
The synaptic sums are torch matmuls (BLAS in float32/float64 where exact); the step loop runs in
the numba kernel of run/kernel.py on CPU and in torch (``lif_step``) on other devices.
tests/test_emulator.py proves both equal to Lava spike for spike and state for state.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from snn_deploy.errors import UserError
from snn_deploy.profiles import Profile
from snn_deploy.quantize.deployment import Deployment
from snn_deploy.run import kernel as cpu_kernel
from snn_deploy.run.layer_constants import ConvSynapses, LayerConstants, Synapses, constants
from snn_deploy.run.lif_core import Bounds, abs_max, bounds, lif_update, torch_ops, wrap_int32
from snn_deploy.run.recording import Recording
from snn_deploy.run.workers import worker_pool

CHUNK = 256  # samples per pass and thread: keeps each step's tensors in cache
CHUNK_BYTES = 1 << 28  # at most this much per (T, chunk, widest layer) float64 tensor
KERNELS = ("numba", "torch")  # the step loop: run/kernel.py (CPU only) or lif_step in torch


class Workspace:
    """Buffers reused from one chunk to the next, by name: a fresh multi-megabyte tensor per chunk
    costs page faults on CPU (the allocator returns large blocks to the system), about as much
    as the arithmetic on it. A buffer handed out is valid until the same name is asked for again."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype,
            device: torch.device) -> torch.Tensor:
        buf = self._buffers.get(name)
        numel = int(np.prod(shape))
        if buf is None or buf.dtype != dtype or buf.device != device or buf.numel() < numel:
            buf = self._buffers[name] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)


def _empty(ws: Workspace | None, name: str, shape: tuple[int, ...], dtype: torch.dtype,
           device: torch.device) -> torch.Tensor:
    return ws.get(name, shape, dtype, device) if ws is not None else \
        torch.empty(shape, dtype=dtype, device=device)


def dense(c: Synapses, s: torch.Tensor) -> torch.Tensor:
    """Synaptic input of (..., n_in) spikes or levels -> (..., n_out) exact float64."""
    acc = torch.matmul(s.to(c.matmul_dtype), c.weights.T).to(torch.float64)
    if c.int32_safe:  # no wrap can happen below: only the arithmetic shift remains
        return torch.floor(acc / float(1 << -c.weight_exp)) if c.weight_exp < 0 \
            else acc * float(1 << c.weight_exp)
    if c.graded:  # weights.dot(s_in) on int32 arrays wraps in int32
        acc = wrap_int32(acc)
    if c.weight_exp > 0:  # np.left_shift on int32 wraps; np.right_shift floors
        acc = wrap_int32(acc * float(1 << c.weight_exp))
    elif c.weight_exp < 0:
        acc = torch.floor(acc / float(1 << -c.weight_exp))
    return wrap_int32(acc)  # a_out is an int32 port


@dataclasses.dataclass(frozen=True)
class LayerTrace:
    """A layer's spikes, and optionally its u and v, in local time: (T, B, n) each; ``counts``
    (B, n) int64 spikes per sample and ``levels`` (T, B, n) float32 0/1 spikes, the next layer's
    matmul input, when the kernel wrote them on the way (else None)."""

    spikes: torch.Tensor  # bool
    u: torch.Tensor | None  # int64
    v: torch.Tensor | None  # int64
    counts: torch.Tensor | None = None
    levels: torch.Tensor | None = None

    def spike_counts(self) -> torch.Tensor:
        return self.counts if self.counts is not None else spike_counts(self.spikes)


def layer_bounds(c: LayerConstants, act_peak: float, profile: Profile,
                 bias: torch.Tensor | None = None) -> Bounds:
    """``lif_core.bounds`` of a layer whose feed-forward input into u peaks at ``act_peak`` (and
    whose bias is ``bias`` when given per step, else its own)."""
    if c.rec is not None:
        act_peak += c.rec.peak * float(1 << profile.activation_shift)
    return bounds(act_peak=act_peak, u_keep=c.u_keep, v_keep=c.v_keep,
                  bias_peak=abs_max(c.bias if bias is None else bias),
                  big=float(profile.state_max))


def lif_step(c: LayerConstants, u: torch.Tensor, v: torch.Tensor, act: torch.Tensor,
             update: Callable, big: float, out: torch.Tensor | None = None,
             scratch: torch.Tensor | None = None, bias: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of Lava's fixed-point LIF on exact float64 integers: ``update`` (the layer's
    ``lif_core.lif_update`` over ``lif_core.torch_ops``), then the threshold and reset; the spikes
    written into ``out`` when given. ``act`` may be float32 (exact integers); ``bias`` replaces
    the layer's own (an input layer fed its data as bias). Returns (u, v, spikes)."""
    u, v = update(u, v, act, c.bias if bias is None else bias, c.u_keep, c.v_keep, big)
    # reset: v * [v <= vth] with a float mask (comparisons into bool and masked_fill are 3-5x
    # slower on CPU, torch 2.3); v is a finite integer, so the product is exactly 0 or v
    keep = torch.le(v, c.vth, out=scratch) if scratch is not None else torch.le(v, c.vth).double()
    v.mul_(keep)
    z = torch.logical_not(keep, out=out) if out is not None else torch.logical_not(keep)
    return u, v, z


def _recurrent_act(c: LayerConstants, a_ff: torch.Tensor, z_prev: torch.Tensor,
                   shift: float) -> torch.Tensor:
    assert c.rec is not None
    a = a_ff + dense(c.rec, z_prev)  # the LIF's input port sums both int32 messages
    if not (c.ff.int32_safe and c.rec.int32_safe):
        a = wrap_int32(a)
        return wrap_int32(a * shift)
    return a * shift


def drive(c: LayerConstants, s: torch.Tensor, profile: Profile, *, ws: Workspace | None = None
          ) -> torch.Tensor:
    """What (T, B, n_in) presynaptic spikes or levels deliver to a layer, as ``lif`` takes it:
    for a feed-forward layer the input already shifted into u (a_in << 6, int32-wrapped as in
    Lava, float32 when exact), for a recurrent one the feed-forward Dense's int32 output, which
    the loop sums with the recurrent one before the shift. With a workspace the result lives in
    its "drive" buffer."""
    if c.ff is None:  # an input layer: the data enter as its input current (or, zeroed, as bias)
        return s.to(torch.float64).mul_(float(1 << profile.activation_shift))
    if isinstance(c.ff, ConvSynapses):  # |a| < 2**23 after the wrap: a << 6 fits int32
        return c.ff.apply(s).mul_(float(1 << profile.activation_shift))
    if c.rec is None and c.ff.folded is not None:
        if s.dtype != torch.float32:
            s = _empty(ws, "drive_in", tuple(s.shape), torch.float32, s.device).copy_(s)
        out = _empty(ws, "drive", (*s.shape[:-1], c.size), torch.float32, s.device)
        torch.mm(s.reshape(-1, s.shape[-1]), c.ff.folded.T, out=out.view(-1, c.size))
        return out
    a_in = dense(c.ff, s)
    if c.rec is not None:
        return a_in
    act = a_in.mul_(float(1 << profile.activation_shift))
    return act if c.ff.int32_safe else wrap_int32(act)


def lif(c: LayerConstants, a_in: torch.Tensor, *, profile: Profile, record_state: bool = False,
        ws: Workspace | None = None, name: str = "spikes", kernel: str = "torch",
        resets: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> LayerTrace:
    """CUBA LIF dynamics over (T, B, n) synaptic input (``drive``'s exact integers); every sample
    starts from zero state and, for a recurrent layer, no spikes on its recurrent synapse.

    ``kernel``: "numba" (run/kernel.py, CPU tensors) or "torch" (``lif_step``, any device). The
    torch loop holds all values as exact float64 integers: u * (4096 - du - 1) < 2**53, and
    dividing by 4096 then truncating equals Lava's sign(x) * (|x| >> 12). With a workspace the
    spikes live in its buffer ``name``, the state in shared ones. ``resets`` (T,) bool: u, v (and
    the recurrent spikes) are zeroed before the steps it marks, as Lava's ``LIFReset`` does;
    ``bias`` (T, B, n): the bias of each step instead of the layer's own. Both run in torch.
    """
    if resets is not None or bias is not None:
        kernel = "torch"
    if kernel == "numba":
        return _lif_numba(c, a_in, profile=profile, record_state=record_state, ws=ws, name=name)
    if kernel != "torch":
        raise ValueError(f"unknown kernel {kernel!r}: choose from {', '.join(KERNELS)}")
    big = float(profile.state_max)
    shift = float(1 << profile.activation_shift)
    recurrent = c.rec is not None
    state = (tuple(a_in.shape[1:]), torch.float64, a_in.device)
    u, v = _empty(ws, "u", *state).zero_(), _empty(ws, "v", *state).zero_()
    scratch = _empty(ws, "scratch", *state)
    update = lif_update(torch_ops(scratch),
                        layer_bounds(c, abs_max(a_in) * (shift if recurrent else 1.0), profile,
                                     bias=bias))
    spikes = _empty(ws, name, tuple(a_in.shape), torch.bool, a_in.device)
    z_prev = torch.zeros_like(u, dtype=torch.bool)
    us, vs = [], []
    for t in range(a_in.shape[0]):
        if resets is not None and resets[t]:
            u, v = u.zero_(), v.zero_()
            z_prev = torch.zeros_like(z_prev)  # not in place: it is the recorded spikes[t - 1]
        act_t = _recurrent_act(c, a_in[t], z_prev, shift) if recurrent else a_in[t]
        u, v, z_prev = lif_step(c, u, v, act_t, update, big, out=spikes[t], scratch=scratch,
                                bias=None if bias is None else bias[t])
        if record_state:
            us.append(u.to(torch.int64))
            vs.append(v.to(torch.int64))
    return LayerTrace(
        spikes=spikes,
        u=torch.stack(us) if record_state else None,
        v=torch.stack(vs) if record_state else None,
    )


def _lif_numba(c: LayerConstants, a_in: torch.Tensor, *, profile: Profile, record_state: bool,
               ws: Workspace | None, name: str) -> LayerTrace:
    """``lif`` through the fused CPU kernel (run/kernel.py), which also counts the spikes."""
    if a_in.device.type != "cpu":
        raise ValueError(f"the numba kernel runs on CPU tensors, not {a_in.device}")
    shape = tuple(a_in.shape)
    spikes = _empty(ws, name, shape, torch.bool, a_in.device)
    levels = _empty(ws, f"{name}_f32", shape, torch.float32, a_in.device)
    counts = torch.empty(shape[1:], dtype=torch.int64)
    state = (np.empty(shape), np.empty(shape)) if record_state else \
        (cpu_kernel.NO_STATE, cpu_kernel.NO_STATE)
    cpu_kernel.lif_layer(
        a_in.contiguous().numpy(), c.rec_wt if c.rec_wt is not None else cpu_kernel.NO_WEIGHTS,
        c.rec.weight_exp if c.rec is not None else 0, c.rec is not None, c.u_keep, c.v_keep,
        profile.activation_shift, c.bias.numpy(), c.vth, float(profile.state_max),
        spikes.numpy(), counts.numpy(), levels.numpy(), state[0], state[1], record_state)
    u, v = (torch.from_numpy(a.astype(np.int64)) for a in state) if record_state else (None, None)
    return LayerTrace(spikes=spikes, u=u, v=v, counts=counts, levels=levels)


def input_levels(dep: Deployment, x: torch.Tensor, *, ws: Workspace | None = None) -> torch.Tensor:
    """(T, B, ...) encoded input -> (T, B, n) exact levels as Lava receives them."""
    steps, batch = x.shape[0], x.shape[1]
    x = x.reshape(steps, batch, -1)
    if x.shape[2] != dep.input_size:
        raise UserError(f"input has {x.shape[2]} channels, the deployment takes {dep.input_size}")
    levels = _empty(ws, "levels", tuple(x.shape), torch.float32, x.device)
    if dep.input_scale == 1:  # spikes: x * 1 is exact in float32
        return torch.round(x.to(torch.float32), out=levels)
    # graded: Lava's RingBuffer gets rint(float64(x) * scale) (input_to_lava); in float32 the
    # product can round onto a .5 first (0.9 * 255: level 230 against Lava's 229)
    # input_scale < 2**lava.MESSAGE_BITS = 2**24 (validate_deployment): exact in float32
    return levels.copy_(torch.round(x.to(torch.float64) * dep.input_scale))


def default_kernel(device: torch.device) -> str:
    """The step loop a device runs: the numba kernel on CPU, torch elsewhere."""
    return "numba" if device.type == "cpu" else "torch"


INPUT_AS = ("spikes", "bias")  # how the data enter the first layer (``run_layers``)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Lava's global time, as netx runs a network on the chip: every synapse (Dense, Conv) delays
    by one step, so layer i sees layer i - 1's spikes of step t - 1 (an input layer, which has no
    synapse, sees its data at once), and layer i zeroes u and v before step t (from 0) when
    t % reset_interval == (i + reset_offset) % reset_interval (``LIFReset``; netx offsets its
    layers by their index, lava/lib/dl/netx/hdf5.py). Before its first reset a layer runs on
    whatever reaches it. When each layer's resets fall on the arrival of its input (offset 0 behind
    an input layer of neurons, 1 when the first layer has a synapse from the data), layer i at
    step d_i + k, d_i the synapses before it, equals the emulator's local step k mod the interval:
    a reset is the start of a new sample."""

    reset_interval: int
    reset_offset: int = 0

    def resets(self, layer: int, steps: int) -> torch.Tensor:
        t = torch.arange(steps)
        return t % self.reset_interval == (layer + self.reset_offset) % self.reset_interval


def _delayed(s: torch.Tensor) -> torch.Tensor:
    """(T, ...) -> the same one step later (zeros at step 0): a synapse's delay on Lava."""
    return torch.cat([torch.zeros_like(s[:1]), s[:-1]])


def _input_bias(dep: Deployment, levels: torch.Tensor) -> torch.Tensor:
    """An input layer's bias per step: the (T, B, n) data as its mantissas, << its bias_exp."""
    layer = dep.layers[0]
    if layer.kind != "input":
        raise UserError(f"--input-as bias feeds an input layer of neurons; layer 0"
                        f" ({layer.neuron}) is a {layer.kind} layer")
    top = dep.profile.bias_mant_max
    if abs_max(levels) > top:
        raise UserError(f"input values as bias mantissas must lie in {-top - 1}..{top}"
                        f" ({dep.profile.bias_mant_bits}-bit signed)")
    exp = torch.as_tensor(layer.bias_exp, dtype=torch.float64, device=levels.device)
    return levels.to(torch.float64) * torch.pow(2.0, exp)


def run_layers(dep: Deployment, x: torch.Tensor, *, device: str | torch.device = "cpu",
               record_state: bool = False, ws: Workspace | None = None,
               consts: dict[int, list[LayerConstants]] | None = None,
               kernel: str | None = None, input_as: str = "spikes",
               pipeline: Pipeline | None = None) -> list[LayerTrace]:
    """Every layer's trace for (T, B, n) encoded input, all samples at once, as one Lava run of
    them computes it (lava-sim: every sample from rest).

    ``ws`` reuses buffers across calls (the traces then stay valid until the next call);
    ``consts`` caches the layer constants by the input's peak level; ``kernel`` picks the step
    loop (a key of ``KERNELS``; default ``default_kernel(device)``). ``input_as`` "bias": x holds
    the bias mantissas of an input layer of neurons (layer 0) per step, as netx's ``input`` block
    takes an image. ``pipeline``: run in Lava's global time with its resets (``Pipeline``)."""
    if input_as not in INPUT_AS:
        raise UserError(f"unknown input mode {input_as!r}: choose from {', '.join(INPUT_AS)}")
    dev = torch.device(device)
    s = input_levels(dep, x.to(dev), ws=ws)
    bias = _input_bias(dep, s) if input_as == "bias" else None
    if bias is not None:
        s = torch.zeros_like(s)  # nothing arrives through a synapse
    peak = int(abs_max(s))
    layers = consts.get(peak) if consts is not None else None
    if layers is None:
        layers = constants(dep, dev, peak)
        if consts is not None:
            consts[peak] = layers
    loop = kernel or default_kernel(dev)
    traces = []
    for k, c in enumerate(layers):
        if pipeline is not None and c.ff is not None:
            s = _delayed(s)
        a_in = c.delayed(drive(c, s, dep.profile, ws=ws))  # a DelayDense's delays, if any
        trace = lif(c, a_in, profile=dep.profile, record_state=record_state, ws=ws,
                    name=f"spikes{k}", kernel=loop, bias=bias if k == 0 else None,
                    resets=None if pipeline is None else pipeline.resets(k, s.shape[0]))
        traces.append(trace)
        s = trace.levels if trace.levels is not None else trace.spikes
    return traces


def spike_counts(spikes: torch.Tensor) -> torch.Tensor:
    """(T, B, n) bool -> (B, n) spikes per neuron and sample; summing bytes in bytes is 20x faster
    than torch's bool sum (it converts to int64 first), and exact while T < 256."""
    small = torch.uint8 if spikes.shape[0] < 256 else torch.int32
    return spikes.view(torch.uint8).sum(dim=0, dtype=small).to(torch.int64)


class Emulator:
    """Runs a Deployment batch after batch as one Lava run of all the samples would: every sample
    from rest, so batches are independent of each other.

    On CPU, chunks of ``CHUNK`` samples run on ``torch.get_num_threads()`` threads, one chunk per
    thread with one intra-op thread each (the kernel releases the GIL; the step loop's work is
    too small to split well across cores inside one chunk).
    """

    def __init__(self, dep: Deployment, *, device: str | torch.device = "cpu",
                 kernel: str | None = None, input_as: str = "spikes"):
        self.dep, self.device, self.input_as = dep, torch.device(device), input_as
        self.kernel = kernel or default_kernel(self.device)
        self._workspaces: list[Workspace] = []
        self._consts: dict[int, list[LayerConstants]] = {}
        self._threads = torch.get_num_threads() if self.device.type == "cpu" else 1

    def _workspace(self, k: int) -> Workspace:
        while len(self._workspaces) <= k:
            self._workspaces.append(Workspace())
        return self._workspaces[k]

    def _chunk(self, x: torch.Tensor, ws: Workspace) -> tuple[np.ndarray, list[np.ndarray]]:
        """One chunk's output spikes (T, b, n_out) uint8 and per-layer counts."""
        traces = run_layers(self.dep, x, device=self.device, ws=ws, consts=self._consts,
                            kernel=self.kernel, input_as=self.input_as)
        return (traces[-1].spikes.cpu().numpy().view(np.uint8).copy(),
                [t.spike_counts().cpu().numpy() for t in traces])

    def _chunks(self, chunks: list[torch.Tensor]) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        workers = min(self._threads, len(chunks))
        if workers < 2:
            return [self._chunk(c, self._workspace(0)) for c in chunks]
        for k in range(workers):
            self._workspace(k)

        def group(k: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
            return [self._chunk(c, self._workspace(k)) for c in chunks[k::workers]]

        groups = list(worker_pool(workers).map(group, range(workers)))
        return [groups[i % workers][i // workers] for i in range(len(chunks))]

    def run(self, x: np.ndarray | torch.Tensor) -> Recording:
        """(T, B, n) input -> Recording, in chunks of ``CHUNK`` samples (fewer where a layer's
        (T, chunk, n) float64 tensors would pass ``CHUNK_BYTES``: big conv layers)."""
        x = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
        widest = max(max(layer.size for layer in self.dep.layers), self.dep.input_size)
        chunk = max(1, min(CHUNK, CHUNK_BYTES // (8 * x.shape[0] * widest)))
        results = self._chunks([x[:, start:start + chunk] for start in range(0, x.shape[1], chunk)])
        return Recording(
            output=np.concatenate([out for out, _ in results], axis=1),
            layer_names=tuple(layer.neuron for layer in self.dep.layers),
            counts=tuple(np.concatenate(c) for c in zip(*(counts for _, counts in results))),
        )


def run_emulator(dep: Deployment, x: np.ndarray | torch.Tensor, *,
                 device: str | torch.device = "cpu", kernel: str | None = None) -> Recording:
    """Run (T, B, n) input as one Lava run of it would; the Recording equals lava-sim's."""
    return Emulator(dep, device=device, kernel=kernel).run(x)

"""Conv networks at scale: emulator and lava-sim throughput, peak memory; prints JSON.

    python benchmarks/scale.py [--samples 64] [--lava-samples 1] [--memory-samples 250,500,1000]

Networks:
- ``pilotnet``: lava-dl's PilotNet LIF (``tests/lava/lib/dl/netx/gts/pilotnet_lif``), imported
  with native layers; its input layer of neurons takes the image as bias, T = 16 (as lava-dl's
  tests run it). lava-sim runs conv layers but no input layer yet, so the emulator/lava-sim
  ratio is measured on the network past its input layer (``--skip-layers 1``, as lava-dl's
  spike-input test runs it), fed the chip's recorded input spikes; that part is nearly all of
  the work.
- ``cifar``: a CIFAR-10-shaped conv SNN with random integer weights, 3x32x32 -> conv 32 (3x3,
  stride 1) -> conv 64 (stride 2) -> conv 128 (stride 2) -> dense 10, T = 16, rate-coded random
  input. Pooling layers do not exist yet, so strided convolutions stand in for them.

Emulator figures: samples/s of ``Emulator.run`` (median of 3 after a warm-up). lava-sim: one Lava
run of ``--lava-samples`` samples (slow: about 10 s per PilotNet sample here). Peak memory: an
emulator run of each of ``--memory-samples`` PilotNet samples in a child process (ru_maxrss,
torch included), so growth with the batch shows. Not measured yet, and reported as null with the
reason: float samples/s and one twin PGD step against one float step (neither network has a
float NIR graph behind it).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from snn_deploy.coding import Coding  # noqa: E402
from snn_deploy.convert.conv import ConvGeometry  # noqa: E402
from snn_deploy.profiles import load_profile  # noqa: E402
from snn_deploy.quantize.deployment import Deployment, LayerStats, QuantLayer  # noqa: E402
from snn_deploy.quantize.netx_read import read_netx  # noqa: E402
from snn_deploy.run.emulator import Emulator  # noqa: E402
from snn_deploy.run.lava_sim import run_lava_sim  # noqa: E402

STEPS = 16
TARGETS = {"emulator_over_lava_sim": 1000.0, "peak_memory_gb_1000_pilotnet": 4.0}
NOT_YET = ("no float graph behind these Deployments (a netx import, random integers), so no float"
           " backend and no twin-step-vs-float-step comparison")


def gts() -> Path:
    import lava.lib.dl.netx as netx

    return Path(netx.__file__).parents[4] / "tests" / "lava" / "lib" / "dl" / "netx" / "gts"


def pilotnet(skip_layers: int = 0) -> Deployment:
    return read_netx(gts() / "pilotnet_lif" / "network.net", profile=load_profile("loihi2"),
                     skip_layers=skip_layers)


def pilotnet_image(samples: int) -> torch.Tensor:
    """The image as the input layer's bias, held for STEPS steps: a (T, B, n) view."""
    image = np.load(gts() / "pilotnet_lif" / "image.npy").transpose(2, 1, 0).reshape(1, 1, -1)
    return torch.as_tensor(image, dtype=torch.float32).expand(STEPS, samples, -1)


def pilotnet_spikes(samples: int) -> torch.Tensor:
    """The chip's recorded input-layer spikes of its first STEPS steps, as (T, B, n)."""
    s = np.load(gts() / "pilotnet_lif" / "input.npy").transpose(3, 2, 1, 0)[:STEPS]
    return torch.as_tensor(s.reshape(STEPS, 1, -1), dtype=torch.float32).expand(-1, samples, -1)


def _conv(name: str, rng: np.random.Generator, in_shape: tuple[int, int, int], c_out: int,
          stride: int) -> QuantLayer:
    hw = ConvGeometry.output_hw(in_shape[1:], (3, 3), (stride, stride), (1, 1), (1, 1))
    geometry = ConvGeometry(in_shape=in_shape, out_shape=(c_out, *hw), kernel=(3, 3),
                            stride=(stride, stride), padding=(1, 1))
    n = c_out * hw[0] * hw[1]
    weights = rng.integers(-12, 13, (c_out, in_shape[0], 3, 3))
    return _layer(name, weights, n, kind="conv", conv=geometry, shape=geometry.out_shape)


def _layer(name: str, weights: np.ndarray, n: int, **kind) -> QuantLayer:
    stats = LayerStats(weights_total=int(weights.size), weights_saturated=0,
                       threshold_saturated=False, bias_saturated=0, u_peak_share=0.0)
    return QuantLayer(synapse=f"{name}_syn", neuron=name, weights=weights.astype(np.int32),
                      weight_exp=0, sign_mode="mixed", num_weight_bits=8, num_message_bits=0,
                      du=2048, dv=1024, vth=40, bias_mant=np.zeros(n, np.int32),
                      bias_exp=np.full(n, 6, np.int32), scale=1.0, stats=stats, **kind)


def cifar() -> Deployment:
    rng = np.random.default_rng(0)
    layers = [_conv("conv0", rng, (3, 32, 32), 32, 1)]
    layers.append(_conv("conv1", rng, layers[-1].shape, 64, 2))
    layers.append(_conv("conv2", rng, layers[-1].shape, 128, 2))
    n = layers[-1].size
    layers.append(_layer("fc", rng.integers(-20, 21, (10, n)) * 2, 10))
    return Deployment(profile=load_profile("loihi2"), layers=tuple(layers), input_size=3 * 32 * 32,
                      input_scale=1, dt=1e-3, coding=Coding.of(encoding="rate", steps=STEPS),
                      source_sha256="", source_nir=b"", calibration="random weights")


def cifar_spikes(samples: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(STEPS, samples, 3 * 32 * 32, generator=gen) < 0.2).to(torch.float32)


def emulator_rate(dep: Deployment, x: torch.Tensor, *, input_as: str = "spikes") -> float:
    emulator = Emulator(dep, input_as=input_as)
    emulator.run(x[:, :2])  # warm-up: numba compilation, buffers
    rates = []
    for _ in range(3):
        started = time.perf_counter()
        emulator.run(x)
        rates.append(x.shape[1] / (time.perf_counter() - started))
    return statistics.median(rates)


def lava_rate(dep: Deployment, x: torch.Tensor) -> float:
    started = time.perf_counter()
    run_lava_sim(dep, x.numpy())
    return x.shape[1] / (time.perf_counter() - started)


def peak_memory_gb(samples: int) -> float:
    """ru_maxrss of a child process that runs ``samples`` PilotNet samples on the emulator."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import resource;"
            f" import scale; scale.Emulator(scale.pilotnet(), input_as='bias').run("
            f"scale.pilotnet_image({samples}));"
            " print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) * 1024 / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64, help="emulator samples per timing")
    ap.add_argument("--lava-samples", type=int, default=1, help="samples of the lava-sim run")
    ap.add_argument("--memory-samples", default="250,500,1000")
    args = ap.parse_args()
    started = time.perf_counter()
    result: dict = {"steps": STEPS, "torch_threads": torch.get_num_threads(), "targets": TARGETS}
    whole, tail = pilotnet(), pilotnet(skip_layers=1)
    emu_whole = emulator_rate(whole, pilotnet_image(args.samples), input_as="bias")
    emu_tail = emulator_rate(tail, pilotnet_spikes(args.samples))
    lava_tail = lava_rate(tail, pilotnet_spikes(args.lava_samples))
    result["pilotnet"] = {
        "emulator_samples_per_s": emu_whole,
        "emulator_samples_per_s_past_input_layer": emu_tail,
        "lava_sim_samples_per_s_past_input_layer": lava_tail,
        "emulator_over_lava_sim": emu_tail / lava_tail,
        "float_samples_per_s": None, "twin_step_over_float_step": None, "why_null": NOT_YET,
        "peak_memory_gb": {n: peak_memory_gb(int(n)) for n in args.memory_samples.split(",")},
    }
    net = cifar()
    emu = emulator_rate(net, cifar_spikes(args.samples))
    lava = lava_rate(net, cifar_spikes(args.lava_samples))
    result["cifar"] = {"emulator_samples_per_s": emu, "lava_sim_samples_per_s": lava,
                       "emulator_over_lava_sim": emu / lava, "float_samples_per_s": None,
                       "twin_step_over_float_step": None, "why_null": NOT_YET}
    result["wall_s"] = time.perf_counter() - started
    result["ru_maxrss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

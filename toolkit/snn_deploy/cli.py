"""The ``snn-deploy`` command: parse, call one ``snn_deploy.api`` function, print, write.

Exit status: 0 on success, 2 on bad input (one line on stderr), 1 on an internal error.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from pathlib import Path

import click

from snn_deploy.cli_options import (
    CONVERT_NORM_CHOICES,
    COUNT,
    POSITIVE,
    RESET_CHOICES,
    RETUNE_CHOICES,
    SEED,
    STEPS,
    Finite,
    StepBar,
    attack_options,
    check_run_outputs,
    check_train_flags,
    epoch_reporter,
    progress_bar,
    run_options,
    say,
    slurm_options,
    train_options,
)
from snn_deploy.data import DATASETS
from snn_deploy.errors import Terminated, UserError, terminate_raises
from snn_deploy.fileio import check_writable
from snn_deploy.run.backends import BACKENDS

EXIT_BAD_INPUT = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="snn-deploy")
def cli() -> None:
    """Spiking networks from Norse through NIR to Loihi 2 fixed point and Lava, measured there."""


@cli.command()
@train_options
def train(dataset, encoding, hidden, steps, epochs, lr, batch_size, seed, ann, conv, adversarial,
          eps, attack_steps, beta, recurrent, rule, loss, decoder_beta, init, noise_sigma, kappa,
          perturbation_weight, out) -> None:
    """Train a Norse LIF network with surrogate-gradient BPTT (or, with --ann, a ReLU ANN)."""
    from snn_deploy import api

    check_train_flags(ann=ann, conv=conv, adversarial=adversarial)
    check_writable(out)
    if ann:
        result = api.train_ann(dataset=dataset, hidden=hidden, conv=conv, epochs=epochs, lr=lr,
                               batch_size=batch_size, seed=seed, adversarial=adversarial, eps=eps,
                               attack_steps=attack_steps, beta=beta, on_epoch=epoch_reporter(epochs))
    else:
        bar = progress_bar(total=epochs, desc="train", unit="epoch")
        result = api.train(dataset=dataset, hidden=hidden or (128,), encoding=encoding,
                           steps=steps, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                           recurrent=recurrent, rule=rule, loss=loss, decoder_beta=decoder_beta,
                           noise_sigma=noise_sigma, adversarial=adversarial, eps=eps,
                           attack_steps=attack_steps, kappa=kappa,
                           perturbation_weight=perturbation_weight, init=init,
                           on_epoch=epoch_reporter(epochs, bar=bar))
        bar.close()
    result.save(out)
    click.echo(result.summary())
    click.echo(f"wrote {out}")


@cli.command()
@click.argument("ann_path", metavar="ANN.pt", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="NIR graph (.nir).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None,
              help="Calibration data (default: the ANN's own data set).")
@click.option("--steps", type=STEPS, default=32, show_default=True, help="Time steps per sample.")
@click.option("--norm", type=click.Choice(CONVERT_NORM_CHOICES), default="max", show_default=True,
              help="Threshold balancing: max or a percentile of each layer's activations.")
@click.option("--percentile", type=Finite(0.0, 100.0, open_low=True), default=99.9, show_default=True)
@click.option("--threshold-scale", type=POSITIVE, default=1.0, show_default=True,
              help="Multiply every threshold (0.3: Ozdenizci & Legenstein's low-latency scaling).")
@click.option("--encoding", type=click.Choice(["direct", "rate"]), default="direct",
              show_default=True)
@click.option("--calibration-samples", type=COUNT, default=None,
              help="Calibrate on the first N training samples (default: all).")
def convert(ann_path, out, dataset, steps, norm, percentile, threshold_scale, encoding,
            calibration_samples) -> None:
    """Convert a ReLU ANN into a NIR graph of IF neurons with balanced thresholds."""
    from snn_deploy import api

    api.check_outputs(out, inputs=(ann_path,))
    result = api.convert(ann_path, out=out, dataset=dataset, steps=steps, norm=norm,
                         percentile=percentile, threshold_scale=threshold_scale,
                         encoding=encoding, calibration_samples=calibration_samples)
    click.echo(result.summary())
    click.echo(f"wrote {out}: {' -> '.join(result.node_types)}")


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="NIR file (.nir).")
def export(checkpoint, out) -> None:
    """Export a checkpoint to a NIR graph (dt and coding in its metadata)."""
    from snn_deploy import api

    api.check_outputs(out, inputs=(checkpoint,))
    network = api.export(checkpoint, out)
    sizes = "-".join(str(s) for s in [network.input_size, *(layer.size for layer in network.layers)])
    click.echo(f"wrote {out}: {len(network.layers)} layers ({sizes}), dt = {network.dt:g} s")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--profile", default="loihi2", show_default=True,
              help="Profile name (see `snn-deploy profiles`) or a path to a .toml file.")
@click.option("--dt", type=POSITIVE, default=None, help="Time step (s) for graphs without one.")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None,
              help="Calibrate the current range on this data set's training split.")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibrate on a .npy array: (N, features) in [0, 1], or encoded (T, N, n) or"
                   " (T, N, *input_shape). Without it or --dataset: scales from weights alone.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Deployment file (.deploy.h5).")
@click.option("--netx", "netx_out", type=click.Path(dir_okay=False), default=None,
              help="Also write a lava-dl netx file (needs weight exponent 0: --profile loihi2-netx).")
@click.option("--retune", "retune_mode", type=click.Choice(RETUNE_CHOICES),
              default="none", show_default=True,
              help="Re-tune after quantization on --dataset: thresholds to the float rates (rate),"
                   " thresholds and weights for the task loss (grad) or an adversarial one (robust).")
@click.option("--source-reset", type=click.Choice(RESET_CHOICES), default="zero",
              show_default=True,
              help="How the model the graph came from reset its neurons (NIR cannot say): zero"
                   " (NIR, Loihi 2), subtract (v - threshold: snnTorch reset_mechanism='subtract'),"
                   " sinabs (Sinabs' several spikes per step, subtraction, IF floored at"
                   " -threshold). Other than zero, a warning measures what Loihi's reset changes.")
def deploy(model, profile, dt, dataset, calibration, seed, out, netx_out, retune_mode,
           source_reset) -> None:
    """Quantize a NIR graph for a hardware profile and write a Deployment."""
    from snn_deploy import api

    api.check_outputs(out, netx_out, inputs=(model, calibration, api.profile_file(profile)))
    result = api.deploy(model, profile=profile, dt=dt, dataset=dataset, calibration=calibration,
                        seed=seed, retune_mode=retune_mode, source_reset=source_reset)
    for message in result.notes:
        click.echo(f"note: {message}", err=True)
    for message in result.warnings:
        click.echo(f"warning: {message}", err=True)
    click.echo(result.summary())
    result.write(out, netx_out=netx_out)
    click.echo(f"wrote {out}")
    if netx_out:
        click.echo(f"wrote {netx_out} (lava-dl netx)")


@cli.command("import-netx")
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--profile", default="loihi2", show_default=True,
              help="Profile name or .toml path (netx's own exponents need the range -8..0).")
@click.option("--skip-layers", type=click.IntRange(min=0), default=0, show_default=True,
              help="As netx's Network(skip_layers=...): drop leading layers (e.g. an input neuron).")
@click.option("--num-layers", type=click.IntRange(min=1), default=None,
              help="As netx's Network(num_layers=...): keep only this many layers.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="Deployment file (.deploy.h5).")
def import_netx(net, profile, skip_layers, num_layers, out) -> None:
    """Read a lava-dl netx network (.net: input, dense, dense_rec and conv layers) into a
    Deployment."""
    from snn_deploy import api

    api.check_outputs(out, inputs=(net, api.profile_file(profile)))
    result = api.import_netx(net, profile=profile, skip_layers=skip_layers, num_layers=num_layers)
    for message in result.warnings:
        click.echo(f"warning: {message}", err=True)
    result.write(out)
    dep = result.deployment
    click.echo(f"imported {net}: {len(dep.layers)} layers ({result.sizes()}); wrote {out}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="float", show_default=True)
@click.option("--device", default="cpu", show_default=True,
              help="torch device for the float and emulator backends (cpu, cuda, cuda:1).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default=None,
              help="Data set (default: the one the model was trained on).")
@click.option("--limit", type=COUNT, default=None, help="Evaluate the first N test samples only.")
@click.option("--steps", type=STEPS, default=None, help="Time steps (default: the model's own).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds the input encoder.")
@click.option("--dt", type=POSITIVE, default=None, help="Time step (s) for graphs without one.")
@click.option("--energy-profile", default=None,
              help="Price energy with this profile (default: the Deployment's; float has none).")
@click.option("--perturbation", default=None,
              help="gaussian:SIGMA or fgsm:EPS: also report the membrane-potential perturbation"
                   " mean square of the float model under seeded Gaussian input noise, or on the"
                   " FGSM adversarial set of the float model (Ding et al. 2024).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the report JSON here.")
@slurm_options
def evaluate(model, backend, device, dataset, limit, steps, seed, dt, energy_profile,
             perturbation, json_out, partition, board) -> None:
    """Accuracy, activity and energy of a checkpoint, NIR graph or Deployment on a backend."""
    from snn_deploy import api

    api.check_outputs(json_out, inputs=(model, api.profile_file(energy_profile)))
    steps_bar = StepBar(backend)
    result = api.evaluate(model, backend=backend, device=device, dataset=dataset, limit=limit,
                          steps=steps, seed=seed, dt=dt, energy_profile=energy_profile,
                          perturbation=perturbation, partition=partition, board=board,
                          on_progress=steps_bar.update)
    steps_bar.close()
    click.echo(result.summary())
    if json_out:
        result.write(json_out)
        click.echo(f"wrote {json_out}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", type=click.Path(dir_okay=False), required=True,
              help="Spikes (.npy), time-major: (T, n) or (T, *input_shape) for one sample,"
                   " (T, B, n) or (T, B, *input_shape) for a batch.")
@click.option("--backend", type=click.Choice(list(BACKENDS)), default="emulator", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device (float, emulator).")
@click.option("--dt", type=POSITIVE, default=None, help="Time step (s) for graphs without one.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output layer spikes (.npy, uint8), in the input's layout.")
@run_options
@slurm_options
def run(model, input_path, backend, device, dt, out, input_as, steps, record, out_dir,
        reset_interval, probe_v, partition, board) -> None:
    """Run a Deployment (or a NIR graph on float) on given input; save the output spikes (and,
    with --record, every layer's spikes, u and v)."""
    from snn_deploy import api

    probes = check_run_outputs(out=out, record=record, out_dir=out_dir)
    api.check_outputs(out, inputs=(model, input_path))
    result = api.run(model, input_path=input_path, backend=backend, device=device, dt=dt,
                     partition=partition, board=board, input_as=input_as, steps=steps,
                     record=probes, reset_interval=reset_interval, v_convention=probe_v)
    written = result.write(out, out_dir if probes else None)
    click.echo(f"{backend}: {result.samples} sample(s) x {result.steps} steps -> output"
               f" {tuple(result.output.shape)}, {int(result.output.sum())} spikes; wrote"
               f" {out or out_dir}" + (f" ({len(written)} files)" if probes else ""))
    click.echo(result.readout())


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@attack_options
@slurm_options
def attack(model, backend, attacks, eps, norm, iterations, restarts, step_size, eot, queries,
           sources, surrogate, width, ensemble, limit, dataset, seed, device, energy_profile,
           no_checks, json_out, report_dir, partition, board) -> None:
    """Attack a Deployment and verify every adversarial input on the target backend."""
    from snn_deploy import api

    reports = [Path(report_dir) / name for name in ("report.json", "report.md")] if report_dir else []
    api.check_outputs(json_out, *reports, inputs=(model, api.profile_file(energy_profile)))
    result = api.attack(model, backend=backend, attacks=attacks, eps=eps, norm=norm,
                        iterations=iterations, restarts=restarts, step_size=step_size, eot=eot,
                        queries=queries, sources=sources, surrogates=surrogate, width=width,
                        ensemble=ensemble, limit=limit, dataset=dataset, seed=seed, device=device,
                        energy_profile=energy_profile, checks=not no_checks, partition=partition,
                        board=board, on_progress=say)
    click.echo(result.summary())
    plots = result.write(json_out=json_out, report_dir=report_dir)
    if json_out:
        click.echo(f"wrote {json_out}")
    if report_dir:
        out = Path(report_dir)
        click.echo(f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(plots)} plots")


@cli.command()
@click.argument("reports", nargs=-1, required=True, type=click.Path(dir_okay=False))
def compare(reports) -> None:
    """Print evaluate reports (JSON) side by side."""
    from snn_deploy import api

    click.echo(api.compare(reports).summary())


@cli.command()
@click.argument("deployment", type=click.Path(dir_okay=False))
@click.option("--profile", default=None,
              help="Profile whose [limits] apply: a name or a .toml path (default: the Deployment's).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the resource report JSON here.")
def resources(deployment, profile, json_out) -> None:
    """Neuro cores and chips a Deployment needs under a profile's limits, and whether it fits."""
    from snn_deploy import api

    api.check_outputs(json_out, inputs=(deployment, api.profile_file(profile)))
    result = api.resources(deployment, profile=profile)
    click.echo(result.summary())
    if json_out:
        result.write(json_out)
        click.echo(f"wrote {json_out}")


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="Study TOML (see studies/digits.toml).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: study_out/<study name>); finished cells are skipped.")
def study(config_path, out_dir) -> None:
    """Train a grid (coding x decoder x rule x recurrence x regulariser x seeds), deploy every cell,
    attack it on the backend with its own decoder, and write study.csv, study.md and study.png
    (mean and spread over seeds)."""
    from snn_deploy import api
    from snn_deploy.study import folder_name, load_study, run_study

    config = load_study(config_path)
    out = Path(out_dir) if out_dir is not None else Path("study_out") / folder_name(config.name)
    api.check_outputs(*(out / name for name in ("study.csv", "study.md", "study.png")),
                   inputs=(config_path,))
    result = run_study(config, out, on_progress=lambda msg: click.echo(msg, err=True))
    click.echo(f"{len(result.cells)} cells: {result.ran} run, {result.skipped} skipped"
               f" (finished before), {result.failed} failed")
    click.echo(result.markdown_path.read_text())
    click.echo(f"wrote {result.csv_path}, {result.markdown_path}, {result.plot_path}"
               f" (cells in {out / 'cells'})")


@cli.command()
def profiles() -> None:
    """List the hardware profiles shipped with snn-deploy."""
    from snn_deploy.profiles import available_profiles, load_profile

    for name, path in available_profiles().items():
        click.echo(f"{name:10s} {load_profile(name).description}  ({path})")


def main(argv: list[str] | None = None) -> int:
    """Entry point: maps bad input to one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        with terminate_raises():
            cli.main(args=argv, prog_name="snn-deploy", standalone_mode=False)
    except UserError as exc:
        click.echo(f"snn-deploy: error: {exc}", err=True)
        return EXIT_BAD_INPUT
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        click.echo(f"snn-deploy: error: {exc.format_message()}", err=True)
        return EXIT_BAD_INPUT
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        cause = exc.__cause__ if isinstance(exc, click.exceptions.Abort) else exc
        if isinstance(cause, Terminated):  # click turns KeyboardInterrupt into Abort
            click.echo(f"snn-deploy: terminated by {signal.Signals(cause.signum).name}", err=True)
            return 128 + cause.signum
        click.echo("snn-deploy: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

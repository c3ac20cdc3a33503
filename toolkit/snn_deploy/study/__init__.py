"""Robustness study (workflow layer, on top of the API): train a grid of models, deploy each to a
profile, attack it on the target backend, and tabulate mean and spread over seeds.

A study is a TOML file::

    [study]
    name = "digits"            # table title
    dataset = "digits"         # a key of data.DATASETS
    profile = "loihi2"         # profile name or .toml path
    backend = "emulator"       # emulator | lava-sim
    seeds = [0, 1, 2]          # every grid cell is trained once per seed
    steps = 16                 # time steps per sample
    epochs = 8
    hidden = 64                # one size or a list of sizes
    lr = 2e-3                  # optional (default 2e-3)
    batch_size = 64            # optional (default 64)
    limit = 360                # test samples evaluated and attacked
    attacks = ["pgd"]          # keys of attack.ATTACKS
    eps = [0.0, 0.05, 0.1]     # L-inf radii in the input range [0, 1]
    iterations = 10            # attack iterations
    perturbation_sigma = 0.1   # Gaussian input noise for the membrane-perturbation MS

    [grid]
    encoding = ["rate", "latency"]     # keys of coding.ENCODERS (fusion included)
    loss = ["count", "first_spike"]    # the loss and output decoder, LOSS or LOSS:BETA
    rule = ["bptt"]                    # keys of train.rules.RULES
    recurrent = [false, true]
    regulariser = ["none", "noise:0.1"]

``[grid]`` may also be an array of tables (``[[grid]]`` repeated): each is a product of its own
axes (missing axes take one default value: rate, count, bptt, false, none), and the study runs
the union of their cells, in the order they first appear, each grid point once. So one study can
cross coding with decoding on one rule and cross rules with recurrence and regularisers on fewer
codings, instead of the full product of every axis.

Losses (``LOSSES`` of train.bptt) pick the output decoder: ``count`` (spike count), ``first_spike``
(logits -beta * t_first), ``max_membrane`` (logits beta * max_t membrane / threshold); ``:BETA``
sets the logit scale beta (default 1; it changes the loss, not the prediction). Regularisers
(``REGULARISERS``) map onto ``api.train`` keywords: ``none``; ``noise:S`` -> ``noise_sigma=S``
(Gaussian-noise training); ``fgsm:E`` / ``pgd:E`` -> ``adversarial="fgsm"|"pgd", eps=E``
(adversarial training); ``perturbation:A`` -> ``noise_sigma=PERTURBATION_NOISE_SIGMA,
perturbation_weight=A`` (the membrane-perturbation regulariser of Ding et al., ICML 2024, which
compares a clean and a noisy pass). Every cell trains with ``init = "auto"`` (train/init.py).

Every cell (grid point x seed) trains -> checkpoint -> NIR -> Deployment (calibrated on the
data set) -> clean accuracy, spikes, synaptic ops and energy on the backend, read with the cell's
decoder -> attack sweep verified on the backend with that decoder -> membrane-perturbation MS.
Each finished cell is ``OUT/cells/<cell-id>.json``, written atomically; a cell whose JSON exists is
skipped (delete a failed cell's JSON to retry it). A cell that raises is recorded as
``{"status": "failed", "error": ...}`` and the others go on.
"""

from snn_deploy.study.config import StudyConfig, folder_name, load_study, parse_study
from snn_deploy.study.runner import StudyResult, run_cell, run_study

__all__ = ["StudyConfig", "StudyResult", "folder_name", "load_study", "parse_study", "run_cell",
           "run_study"]

"""Adversarial attacks, one per file, registered by name in ``ATTACKS``."""

from __future__ import annotations

from snn_deploy.attack.apgd import APGD_CE, APGD_DLR
from snn_deploy.attack.base import Attack
from snn_deploy.attack.fgsm import FGSM
from snn_deploy.attack.noise import GAUSSIAN, UNIFORM
from snn_deploy.attack.pgd import PGD
from snn_deploy.attack.spikes import SPIKE_FLIP, SPIKE_JITTER
from snn_deploy.attack.square import SQUARE

ATTACKS: dict[str, Attack] = {a.name: a for a in (
    FGSM, PGD, APGD_CE, APGD_DLR, SQUARE, GAUSSIAN, UNIFORM, SPIKE_FLIP, SPIKE_JITTER)}


def attack_names() -> list[str]:
    return list(ATTACKS)

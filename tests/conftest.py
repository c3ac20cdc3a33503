"""Shared fixtures: a small real Norse model trained on digits, its NIR file and its Deployment."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from hypothesis import settings
from snn_deploy import api
from snn_deploy.data import load_dataset
from snn_deploy.quantize.deployment import save_deployment
from snn_deploy.train.model import save_checkpoint

warnings.filterwarnings("ignore", category=DeprecationWarning)

# CI runs the same examples every time (a new random example is found locally, not in CI).
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def small_model_files(tmp_path_factory):
    """A 64-24-10 LIF network trained for a few epochs (T = 12): checkpoint, NIR and deployment."""
    folder = tmp_path_factory.mktemp("small_model")
    result = api.train(dataset="digits", hidden=(24,), encoding="rate", steps=12, epochs=4,
                       seed=1, lr=5e-3, batch_size=64)
    ckpt = folder / "small.pt"
    save_checkpoint(result.model, ckpt)
    nir_path = folder / "small.nir"
    api.export(ckpt, nir_path)
    dep_path = folder / "small.deploy.h5"
    save_deployment(api.deploy(nir_path, profile="loihi2", dataset="digits").deployment, dep_path)
    return {"checkpoint": ckpt, "nir": nir_path, "deployment": dep_path, "train": result}


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tiny models: a second one only adds contention on
    a busy 2-core machine (15x slower, measured). Modules take it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

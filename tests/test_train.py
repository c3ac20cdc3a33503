"""Training: deterministic with a seed, learns digits, and checkpoints load weights-only."""

from __future__ import annotations

import pickle

import pytest
import torch
from snn_deploy import api
from snn_deploy.errors import InputFileError
from snn_deploy.train.model import load_checkpoint, save_checkpoint


def _train(seed: int):
    return api.train(dataset="digits", hidden=(12,), encoding="rate", steps=6, epochs=2,
                     seed=seed, lr=5e-3, batch_size=128)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = _train(3), _train(3), _train(4)
    for (name, wa), wb, wc in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                                  c.model.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert not all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(),
                                                      c.model.state_dict().values()))
    assert [h.loss for h in a.history] == [h.loss for h in b.history]


def test_bptt_learns_digits(small_model_files):
    result = small_model_files["train"]
    assert result.history[-1].loss < result.history[0].loss
    assert result.test_accuracy > 0.5  # 4 epochs of a 24-neuron layer; chance is 0.1


def test_checkpoint_is_weights_only_and_round_trips(tmp_path, small_model_files):
    payload = torch.load(small_model_files["checkpoint"], weights_only=True)
    assert payload["format"] == "snn-deploy-checkpoint"
    assert payload["config"]["hidden"] == [24]
    model = load_checkpoint(small_model_files["checkpoint"])
    for key, value in small_model_files["train"].model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    save_checkpoint(model, tmp_path / "again.pt")
    assert load_checkpoint(tmp_path / "again.pt").config == model.config


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickled_object_is_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "snn-deploy-checkpoint", "x": _Payload()}, evil)
    with pytest.raises(InputFileError, match="not a readable snn-deploy checkpoint"):
        load_checkpoint(evil)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InputFileError):
        load_checkpoint(plain)

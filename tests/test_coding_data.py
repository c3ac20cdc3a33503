"""Data split and encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from snn_deploy.coding import Coding, DecoderSpec, direct_encode, encode, predict, rate_encode, spike_count
from snn_deploy.errors import UserError


def test_digits_split_is_fixed_stratified_and_scaled(digits):
    assert digits.x_train.shape == (1437, 64) and digits.x_test.shape == (360, 64)
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0
    test_share = np.bincount(digits.y_test.numpy()) / len(digits.y_test)
    train_share = np.bincount(digits.y_train.numpy()) / len(digits.y_train)
    assert np.abs(test_share - train_share).max() < 0.01
    from snn_deploy.data import load_dataset

    again = load_dataset("digits")
    assert torch.equal(again.x_test, digits.x_test) and torch.equal(again.y_test, digits.y_test)


def test_rate_coding_is_seeded_and_has_the_right_rate():
    x = torch.tensor([[0.0, 0.25, 1.0]])
    a = rate_encode(x, steps=4000, seed=3)
    assert torch.equal(a, rate_encode(x, steps=4000, seed=3))
    assert not torch.equal(a, rate_encode(x, steps=4000, seed=4))
    rates = a.mean(dim=0)[0]
    assert rates[0] == 0 and rates[2] == 1 and abs(float(rates[1]) - 0.25) < 0.03
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_direct_coding_repeats_the_value():
    x = torch.rand(5, 7)
    d = direct_encode(x, steps=3, seed=0)
    assert d.shape == (3, 5, 7) and torch.equal(d[2], x)


def test_spike_count_decoder():
    spikes = torch.zeros(4, 2, 3)
    spikes[:, 0, 2] = 1
    spikes[0, 1, 0] = 1
    assert spike_count(spikes).tolist() == [[0, 0, 4], [1, 0, 0]]
    assert predict(spikes).tolist() == [2, 0]


def test_unknown_encoding_and_bad_steps():
    with pytest.raises(UserError, match="unknown encoding 'morse'"):
        encode(torch.zeros(1, 2), encoding="morse", steps=3, seed=0)
    with pytest.raises(UserError, match="--steps must be in 1..100000"):
        encode(torch.zeros(1, 2), encoding="rate", steps=0, seed=0)


def test_latency_coding_spikes_once_earlier_for_larger_values():
    from snn_deploy.coding import encode

    x = torch.tensor([[1.0, 0.5, 0.25, 0.0]])
    s = encode(x, encoding="latency", steps=8, seed=0)
    assert s.shape == (8, 1, 4)
    assert s.sum(dim=0).tolist() == [[1.0, 1.0, 1.0, 0.0]]  # x = 0 never spikes
    assert [int(s[:, 0, j].argmax()) for j in range(3)] == [0, 4, 6]  # floor((1 - x) T)


def test_burst_codings_spike_for_a_share_of_the_window_at_its_start_or_end():
    from snn_deploy.coding import encode

    x = torch.tensor([[1.0, 0.5, 0.3, 0.0]])
    first = encode(x, encoding="burst-first", steps=10, seed=0)[:, 0]
    last = encode(x, encoding="burst-last", steps=10, seed=0)[:, 0]
    assert first.sum(dim=0).tolist() == [10.0, 5.0, 3.0, 0.0]
    assert last.sum(dim=0).tolist() == [10.0, 5.0, 3.0, 0.0]
    assert first[:5, 1].tolist() == [1.0] * 5 and last[5:, 1].tolist() == [1.0] * 5
    assert torch.equal(encode(x, encoding="latency", steps=10, seed=1),
                       encode(x, encoding="latency", steps=10, seed=2))  # deterministic


def test_coding_is_checked_once_keeps_the_file_entries_and_gives_defaults():
    raw = {"writer": "other tool", "steps": np.int64(12), "encoding": b"latency"}
    coding = Coding.read(raw, where="m.nir")
    assert coding.to_dict() == {"writer": "other tool", "steps": 12, "encoding": "latency"}
    assert list(coding.to_dict()) == ["writer", "steps", "encoding"]  # the file's order
    assert (coding.encoding, coding.steps, coding.dataset) == ("latency", 12, "digits")
    assert coding.decoder == DecoderSpec("spike_count", 1.0) and coding.binary
    empty = Coding()
    assert (empty.encoding, empty.steps, empty.to_dict()) == ("rate", 32, {})
    assert not Coding.of(encoding="direct").binary
    for bad, match in (({"steps": 2.5}, "m.nir: steps must be a whole number"),
                       ({"steps": 0}, "m.nir: steps must be a whole number"),
                       ({"dataset": 3}, "m.nir: dataset must be text"),
                       ({"decoder": "first_spike", "decoder_beta": 0.0}, "m.nir: decoder beta"),
                       ([1, 2], "m.nir is \\[1, 2\\], not a group of values")):
        with pytest.raises(UserError, match=match):
            Coding.read(bad, where="m.nir")

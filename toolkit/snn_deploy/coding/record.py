"""The coding a model file records, checked once when the file is read (``Coding``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np

from snn_deploy.bounds import MAX_STEPS
from snn_deploy.coding.decoders import DecoderSpec
from snn_deploy.coding.encoders import BINARY_ENCODINGS
from snn_deploy.errors import UserError, brief

DEFAULT_STEPS = 32  # a coding's steps where the file records none


def _number(value: object) -> float | None:
    """A single finite number from a file's metadata, else None."""
    arr = np.asarray(value) if not isinstance(value, dict) else np.asarray(None)
    if arr.size != 1 or arr.dtype.kind not in "iuf":
        return None
    number = float(arr.reshape(-1)[0])
    return number if math.isfinite(number) else None


def _checked_entry(key: str, value: object, *, where: str) -> object:
    """One coding entry read from a file, checked and in its Python type (see ``Coding``)."""
    value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    number = _number(value)
    what = f"{where}: {key}"
    if key == "steps":
        if number is None or number != round(number) or not 1 <= number <= MAX_STEPS:
            raise UserError(f"{what} must be a whole number in 1..{MAX_STEPS}, got {brief(value)}")
        return int(number)
    if key == "decoder_groups":
        if number is None or number != round(number) or not 1 <= number <= MAX_STEPS:
            raise UserError(f"{what} must be a whole number in 1..{MAX_STEPS}, got {brief(value)}")
        return int(number)
    if key == "decoder_beta":
        if number is None:
            raise UserError(f"{what} must be a finite number, got {brief(value)}")
        return number
    if key in Coding.TEXT_KEYS and not isinstance(value, str):
        raise UserError(f"{what} must be text, got {brief(value)}")
    return value


@dataclasses.dataclass(frozen=True)
class Coding:
    """The coding a model file records (a NIR graph's ``metadata["snn_deploy"]``, a Deployment's
    ``coding`` group, a netx file's ``snn_deploy_coding``), checked once when the file is read.

    Entries (the defaults hold where a file has none):

        encoding      a key of ``ENCODERS``, or "none" for an ANN (default "rate")
        steps         time steps T per sample, 1..MAX_STEPS (default ``DEFAULT_STEPS``, 32)
        dataset       the data set the model was trained on (default "digits")
        decoder       a key of ``DECODERS`` (default "spike_count")
        decoder_beta  the decoder's logit scale, finite and > 0 (default 1)
        decoder_groups  the average readout's populations (classes), >= 1 (default 1)

    ``entries`` keeps every entry as the file holds it, in its order, other tools' keys too (e.g.
    "writer"), so that a Deployment made from a graph writes the same coding back.
    """

    entries: tuple[tuple[str, object], ...] = ()

    TEXT_KEYS = ("encoding", "dataset", "decoder")

    @classmethod
    def read(cls, raw: object, *, where: str) -> Coding:
        """A coding read from a file, each value checked (``steps`` a whole number in
        1..MAX_STEPS, ``decoder_beta`` a finite number, names text, the decoder known); ``where``
        names the coding in the one-line UserError."""
        if isinstance(raw, Coding):
            return raw
        if not isinstance(raw, Mapping):
            raise UserError(f"{where} is {brief(raw)}, not a group of values")
        coding = cls(tuple((str(key), _checked_entry(str(key), value, where=where))
                           for key, value in raw.items()))
        try:
            coding.decoder  # noqa: B018 -- checks the decoder's name and beta
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        return coding

    @classmethod
    def of(cls, **entries: object) -> Coding:
        """A coding from values this program chose (a training config, an ANN), checked alike."""
        return cls.read(entries, where="coding")

    def _get(self, key: str, default: object) -> object:
        return next((value for k, value in self.entries if k == key), default)

    @property
    def encoding(self) -> str:
        return str(self._get("encoding", "rate"))

    @property
    def steps(self) -> int:
        return int(self._get("steps", DEFAULT_STEPS))

    @property
    def dataset(self) -> str:
        return str(self._get("dataset", "digits"))

    @property
    def decoder(self) -> DecoderSpec:
        return DecoderSpec(name=str(self._get("decoder", "spike_count")),
                           beta=float(self._get("decoder_beta", 1.0)),
                           groups=int(self._get("decoder_groups", 1)))

    @property
    def binary(self) -> bool:
        """Whether the encoded input is 0/1 spikes (else graded values)."""
        return self.encoding in BINARY_ENCODINGS

    def to_dict(self) -> dict:
        """The entries as a dict, in the file's order (what the writers record)."""
        return dict(self.entries)

"""Hardware profiles: what a target computes and what it costs, read from ``hw_profiles/*.toml``.

``--profile`` takes a profile name (a file in ``hw_profiles/``, found both in a source checkout and
in an installed package) or a path to a TOML file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from importlib import resources
from pathlib import Path

import tomli

from snn_deploy import lava_formats as lava
from snn_deploy.bounds import MAX_TEXT_BYTES
from snn_deploy.errors import InputFileError, ProfileError
from snn_deploy.fileio import read_text_bounded

# (section, key) -> Profile field. Every key is required: a profile that omits one is refused.
_REQUIRED_KEYS: dict[tuple[str, str], str] = {
    ("weights", "bits"): "weight_bits",
    ("weights", "num_weight_bits"): "num_weight_bits",
    ("weights", "exp_min"): "weight_exp_min",
    ("weights", "exp_max"): "weight_exp_max",
    ("neuron", "state_bits"): "state_bits",
    ("neuron", "decay_bits"): "decay_bits",
    ("neuron", "du_offset"): "du_offset",
    ("neuron", "dv_offset"): "dv_offset",
    ("neuron", "threshold_bits"): "threshold_bits",
    ("neuron", "threshold_shift"): "threshold_shift",
    ("neuron", "activation_shift"): "activation_shift",
    ("neuron", "bias_mant_bits"): "bias_mant_bits",
    ("neuron", "bias_exp_max"): "bias_exp_max",
    ("input", "graded_bits"): "input_graded_bits",
}

# The values each number-format key may take: from a degenerate but computable chip up to Lava's
# own format (snn_deploy/lava_formats.py, which cites the Lava file of each): a profile may
# describe a narrower chip than Lava's, never a wider one. Checked with the relations in
# _relation_problems.
PROFILE_RANGES: dict[str, tuple[int, int]] = {
    "weight_bits": (lava.PROFILE_NUM_WEIGHT_BITS_MIN, lava.WEIGHT_BITS),
    "num_weight_bits": (lava.PROFILE_NUM_WEIGHT_BITS_MIN, lava.WEIGHT_BITS),
    "weight_exp_min": (lava.WEIGHT_EXP_MIN, lava.WEIGHT_EXP_MAX),
    "weight_exp_max": (lava.WEIGHT_EXP_MIN, lava.WEIGHT_EXP_MAX),
    "state_bits": (2, lava.STATE_BITS),  # a sign and one bit; the threshold must also fit
    "decay_bits": (1, lava.DECAY_BITS),
    "du_offset": (0, lava.DECAY_OFFSET_MAX),
    "dv_offset": (0, lava.DECAY_OFFSET_MAX),
    "threshold_bits": (1, lava.THRESHOLD_BITS),
    "threshold_shift": (0, lava.THRESHOLD_SHIFT),
    "activation_shift": (0, lava.ACTIVATION_SHIFT),
    "bias_mant_bits": (2, lava.BIAS_MANT_BITS),  # signed: a sign and at least one bit
    "bias_exp_max": (0, lava.BIAS_EXP_MAX),
    "input_graded_bits": (1, lava.MESSAGE_BITS),
}

# What an [energy] section's figures are: simulated before silicon, borrowed from another chip
# (proxy), or measured on the chip itself.
ENERGY_BASES = ("simulated", "proxy", "measured")
_ENERGY_COSTS = ("synop_pj", "neuron_update_pj", "spike_pj")


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Energy per operation of a target, from a profile's ``[energy]`` section.

    E [pJ] = synops * synop_pj + neuron_updates * neuron_update_pj + spikes * spike_pj

    Attributes:
        basis: one of ``ENERGY_BASES``: "simulated", "proxy" or "measured".
        synop_pj: one spike delivered over one synapse (pJ).
        neuron_update_pj: one neuron updated for one time step (pJ).
        spike_pj: one spike sent by a neuron (pJ).
        source: the paper, table or measurement the figures come from.
    """

    basis: str
    synop_pj: float
    neuron_update_pj: float
    spike_pj: float
    source: str


# Every [limits] key is optional: resources() names the ones a profile lacks as unchecked.
LIMIT_KEYS = ("cores_per_chip", "neurons_per_chip", "synapses_per_chip", "neurons_per_core",
              "synaptic_memory_bits_per_core", "fan_in_per_core")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of a target, from a profile's optional ``[limits]`` section (each key
    optional, None where the profile does not give it; the TOML cites each figure's source).

    Attributes:
        cores_per_chip: neuro cores on one chip.
        neurons_per_chip: neurons one chip can hold.
        synapses_per_chip: synapses one chip can hold.
        neurons_per_core: neurons (compartments) one core can hold.
        synaptic_memory_bits_per_core: synaptic memory of one core (bits).
        fan_in_per_core: distinct presynaptic neurons (input axons) one core can receive from;
            bounds the fan-in of every neuron on it.
    """

    cores_per_chip: int | None = None
    neurons_per_chip: int | None = None
    synapses_per_chip: int | None = None
    neurons_per_core: int | None = None
    synaptic_memory_bits_per_core: int | None = None
    fan_in_per_core: int | None = None


@dataclasses.dataclass(frozen=True)
class Profile:
    """Number formats of a fixed-point neuromorphic target (all integers, see hw_profiles/*.toml)
    and, where the profile has an ``[energy]`` section, its energy per operation."""

    name: str
    description: str
    weight_bits: int
    num_weight_bits: int
    weight_exp_min: int
    weight_exp_max: int
    state_bits: int
    decay_bits: int
    du_offset: int
    dv_offset: int
    threshold_bits: int
    threshold_shift: int
    activation_shift: int
    bias_mant_bits: int
    bias_exp_max: int
    input_graded_bits: int
    toml_text: str
    sha256: str
    energy: EnergyModel | None = None  # None when the profile has no [energy] section
    limits: Limits = Limits()  # all None when the profile has no [limits] section

    @property
    def decay_unity(self) -> int:
        """The decay constant that means 'keep everything' (4096 for 12-bit decays)."""
        return 1 << self.decay_bits

    @property
    def state_max(self) -> int:
        """Largest magnitude of u and v (2**23 for 24-bit state)."""
        return 1 << (self.state_bits - 1)

    @property
    def vth_max(self) -> int:
        """Largest threshold mantissa (131071 for 17-bit vth)."""
        return (1 << self.threshold_bits) - 1

    @property
    def bias_mant_max(self) -> int:
        """Largest bias mantissa (4095 for a signed 13-bit one; the smallest is -bias_mant_max - 1)."""
        return (1 << (self.bias_mant_bits - 1)) - 1


def _profile_dir() -> Path:
    return Path(str(resources.files("snn_deploy.hw_profiles")))


def available_profiles() -> dict[str, Path]:
    """Profile name -> TOML path, for every profile shipped with the package."""
    return {p.stem: p for p in sorted(_profile_dir().glob("*.toml"))}


def load_profile(name_or_path: str | Path) -> Profile:
    """Read a profile by name (``loihi2``) or from a TOML file path.

    Raises:
        ProfileError: unknown name, a file that is not a regular one of at most
            ``MAX_TEXT_BYTES`` (a FIFO or /dev/zero is refused unread), unreadable TOML, missing
            keys, values of the wrong type or outside ``PROFILE_RANGES``.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        known = available_profiles()
        if str(name_or_path) not in known:
            raise ProfileError(
                f"unknown profile {str(name_or_path)!r}: known profiles are {', '.join(known)}"
                " (or give a path to a .toml file)"
            )
        path = known[str(name_or_path)]
    try:
        text = read_text_bounded(path, limit=MAX_TEXT_BYTES, what="profile")
    except InputFileError as exc:
        raise ProfileError(str(exc)) from None
    return parse_profile(text, origin=str(path))


def parse_profile(text: str, *, origin: str = "<profile>") -> Profile:
    """Build a Profile from TOML text, naming every missing, malformed or out-of-range key at once."""
    if len(text) > MAX_TEXT_BYTES:
        raise ProfileError(f"profile {origin} is larger than {MAX_TEXT_BYTES:,} characters:"
                           " refused")
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise ProfileError(f"profile {origin} is not valid TOML: {exc}") from None
    values: dict[str, int] = {}
    problems: list[str] = []
    for (section, key), field in _REQUIRED_KEYS.items():
        table = data.get(section)
        value = table.get(key) if isinstance(table, dict) else None
        if value is None:
            problems.append(f"missing [{section}] {key}")
        elif not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"[{section}] {key} must be an integer, got {value!r}")
        else:
            values[field] = value
    name = data.get("name")
    if not isinstance(name, str) or not name:
        problems.append("missing name")
    if problems:
        raise ProfileError(f"profile {origin}: " + "; ".join(problems))
    problems += _range_problems(values) + _relation_problems(values)
    if problems:
        raise ProfileError(f"profile {origin} is impossible: " + "; ".join(problems))
    return Profile(
        name=str(name),
        description=str(data.get("description", "")),
        toml_text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        energy=_parse_energy(data.get("energy"), origin=origin),
        limits=_parse_limits(data.get("limits"), origin=origin),
        **values,
    )


_KEY_OF = {field: f"[{section}] {key}" for (section, key), field in _REQUIRED_KEYS.items()}


def _range_problems(values: dict[str, int]) -> list[str]:
    """Each number-format key outside its ``PROFILE_RANGES`` range, with the range."""
    return [f"{_KEY_OF[field]} = {values[field]} is outside {lo}..{hi}"
            for field, (lo, hi) in PROFILE_RANGES.items() if not lo <= values[field] <= hi]


def _relation_problems(values: dict[str, int]) -> list[str]:
    """Keys that are each in range but do not fit together."""
    problems = []
    if values["weight_exp_min"] > values["weight_exp_max"]:
        problems.append(
            f"[weights] exp_min {values['weight_exp_min']} > exp_max {values['weight_exp_max']}"
        )
    if values["num_weight_bits"] > values["weight_bits"]:
        problems.append(
            f"num_weight_bits {values['num_weight_bits']} > weight bits {values['weight_bits']}"
        )
    # The largest threshold, vth_max << threshold_shift, must be a value v can hold (v saturates at
    # 2**(state_bits - 1) - 1): Lava's 17 + 6 = 23 = 24 - 1.
    top = values["threshold_bits"] + values["threshold_shift"]
    if top > values["state_bits"] - 1:
        problems.append(
            f"threshold_bits + threshold_shift = {values['threshold_bits']} +"
            f" {values['threshold_shift']} = {top} > state_bits - 1 = {values['state_bits'] - 1}:"
            " v could never reach the largest thresholds"
        )
    return problems


def _parse_limits(table: object, *, origin: str) -> Limits:
    """The optional ``[limits]`` section: known keys must be integers >= 1, all named at once.

    Unknown keys are ignored with a warning, not refused: Deployment files embed their profile's
    TOML, and one written with a key since renamed must still load.
    """
    if table is None:
        return Limits()
    if not isinstance(table, dict):
        raise ProfileError(f"profile {origin}: [limits] must be a table, got {table!r}")
    problems: list[str] = []
    values: dict[str, int] = {}
    for key in LIMIT_KEYS:
        value = table.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"[limits] {key} must be an integer >= 1, got {value!r}")
        else:
            values[key] = value
    if problems:
        raise ProfileError(f"profile {origin}: " + "; ".join(problems))
    unknown = sorted(set(table) - set(LIMIT_KEYS))
    if unknown:
        warnings.warn(f"profile {origin}: ignoring unknown [limits] keys {', '.join(unknown)}"
                      f" (known: {', '.join(LIMIT_KEYS)})", stacklevel=3)
    return Limits(**values)


def _parse_energy(table: object, *, origin: str) -> EnergyModel | None:
    """The optional ``[energy]`` section; every problem is named in one ProfileError."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ProfileError(f"profile {origin}: [energy] must be a table, got {table!r}")
    problems: list[str] = []
    costs: dict[str, float] = {}
    for key in _ENERGY_COSTS:
        value = table.get(key)
        if value is None:
            problems.append(f"missing [energy] {key}")
        elif (isinstance(value, bool) or not isinstance(value, (int, float))
              or not math.isfinite(value) or value < 0):
            problems.append(f"[energy] {key} must be a finite number >= 0, got {value!r}")
        else:
            costs[key] = float(value)
    basis = table.get("basis")
    if basis not in ENERGY_BASES:
        problems.append(f"[energy] basis must be one of {', '.join(ENERGY_BASES)}, got {basis!r}")
    source = table.get("source")
    if not isinstance(source, str) or not source.strip():
        problems.append(f"[energy] source must name the paper or measurement, got {source!r}")
    unknown = sorted(set(table) - set(_ENERGY_COSTS) - {"basis", "source"})
    if unknown:
        problems.append(f"unknown [energy] keys {', '.join(unknown)}")
    if problems:
        raise ProfileError(f"profile {origin}: " + "; ".join(problems))
    return EnergyModel(basis=str(basis), synop_pj=costs["synop_pj"],
                       neuron_update_pj=costs["neuron_update_pj"], spike_pj=costs["spike_pj"],
                       source=str(source))

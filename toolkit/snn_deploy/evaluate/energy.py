"""Stage 5: energy per inference, priced from exact activity counts with a profile's constants.

Exact counts first, priced second: ``evaluate/counts.py`` counts what the backend did (synaptic
operations, neuron updates, spikes); this module only multiplies those counts by the per-operation
energies of the profile's ``[energy]`` section. For layer l, per sample:

    E_l [nJ] = 1e-3 * (synops_l * synop_pj + updates_l * neuron_update_pj + spikes_l * spike_pj)

where synops_l are the synaptic operations arriving at layer l (from its source and from its own
recurrent synapses), updates_l = neurons_l x steps and spikes_l are the spikes layer l sends. The
estimate is only as good as its constants: ``basis`` says whether they were simulated before
silicon, borrowed from another chip (proxy) or measured. See docs/energy.md.
"""

from __future__ import annotations

import dataclasses

from snn_deploy.evaluate.counts import ActivityCounts
from snn_deploy.profiles import Profile

NJ_PER_PJ = 1e-3


@dataclasses.dataclass(frozen=True)
class Energy:
    """Priced energy per inference (one sample).

    Attributes:
        per_sample_nj: total energy per sample (nJ), the sum of ``layers_nj``.
        basis: the constants' basis, from the profile: "simulated", "proxy" or "measured".
        profile: name of the profile whose constants priced the counts.
        source: the profile's citation for its constants.
        layers_nj: energy per layer and sample (nJ), input side first.
    """

    per_sample_nj: float
    basis: str
    profile: str
    source: str
    layers_nj: tuple[float, ...]

    def as_dict(self) -> dict:
        """JSON-ready form, with the report's key names."""
        return {
            "energy_per_sample_nj": self.per_sample_nj,
            "energy_basis": self.basis,
            "energy_profile": self.profile,
            "energy_source": self.source,
            "layers": list(self.layers_nj),
        }


def price(activity: ActivityCounts, profile: Profile) -> Energy | None:
    """Price exact activity counts with the profile's energy per operation.

    Returns:
        The energy per sample and per layer, or None when the profile has no ``[energy]`` section.
    """
    model = profile.energy
    if model is None:
        return None
    layers = tuple(
        NJ_PER_PJ * (synops * model.synop_pj + updates * model.neuron_update_pj
                     + spikes * model.spike_pj)
        for synops, updates, spikes in zip(activity.layer_synops_per_sample,
                                           activity.layer_updates_per_sample,
                                           activity.layer_spikes_per_sample, strict=True)
    )
    return Energy(per_sample_nj=float(sum(layers)), basis=model.basis, profile=profile.name,
                  source=model.source, layers_nj=layers)

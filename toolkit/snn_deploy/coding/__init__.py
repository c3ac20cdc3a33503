"""A model's coding: input encoders (``coding.encoders``), output decoders
(``coding.decoders``) and the ``Coding`` a model file records (``coding.record``), in one place;
every name is importable from ``snn_deploy.coding``."""

from __future__ import annotations

from snn_deploy.coding.decoders import (  # noqa: F401
    DECODERS,
    MEMBRANE_DECODERS,
    Decoder,
    DecoderSpec,
    average_logits,
    count_logits,
    decoder_logits,
    decoder_predict,
    first_spike_logits,
    first_spike_times,
    max_membrane_logits,
    predict,
    spike_count,
)
from snn_deploy.coding.encoders import (  # noqa: F401
    BINARY_ENCODINGS,
    ENCODERS,
    FUSION_PARTS,
    STOCHASTIC_ENCODINGS,
    Encoder,
    burst_first_encode,
    burst_last_encode,
    channels,
    direct_encode,
    encode,
    encode_with_uniforms,
    encoded_width,
    fold_channels,
    fusion_encode,
    latency_encode,
    rate_encode,
    straight_through_values,
)
from snn_deploy.coding.record import (  # noqa: F401
    DEFAULT_STEPS,
    Coding,
)

"""The weight fake-quantizer, which lives with the model code in :mod:`speechnas.nn.quant`
(checkpoints save and load fake-quantized models); re-exported here for compression code."""

from speechnas.nn.quant import (
    BITS,
    FakeQuant,
    apply_bits,
    bake,
    quantizable,
    quantize_weight,
    remove_bits,
    weight_bytes,
)

__all__ = [
    "BITS",
    "FakeQuant",
    "apply_bits",
    "bake",
    "quantizable",
    "quantize_weight",
    "remove_bits",
    "weight_bytes",
]

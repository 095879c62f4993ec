"""Weight-only int8 quantization of Linear and Embedding layers, for inference on a CPU.

Each weight row (one output of a Linear, one token of an Embedding) is stored as int8 values q with one float32
scale, w ~ q * scale, the row's largest magnitude mapped to 127 (symmetric: no zero point). 1 byte a weight
instead of 4, so a decoding step, which reads every weight once, moves a quarter of the bytes. Activations stay
float32 and products accumulate in float32: the kernels widen the int8 values as they read them and scale each
dot product once at its end (`kernels.int8_linear_forward`).

Why one scale per row and not per block of 32 inputs (llama.cpp's q8_0): a block scale multiplies every block's
partial sum, and summing each block of 32 across a vector register costs more than the block's products; the
kernel became several times slower than the float one. A row's scale applies once, after its dot product. The
price is precision in rows with outliers, measured in the README (logits of GPT-2 small, validation loss of a
trained character GPT).

A quantized layer holds `weight` as an int8 Parameter (no gradient) of the float weight's shape and a
`weight_scale` buffer (one float32 per row); both go to the state_dict under those names.
"""
import numpy as np

from .. import kernels
from .layers import Embedding, Linear
from .module import Parameter

METHOD = "minigen_int8"


def quantize_int8_(model, from_weights=True):
    """Quantize every Linear and Embedding of `model` in place; returns the model. With from_weights=False
    the layers only take the quantized shapes (contents undefined), for loading a quantized checkpoint."""
    for module in model.modules():
        if isinstance(module, (Linear, Embedding)) and module.weight.dtype != np.int8:
            weight = module.weight.data
            if from_weights:
                q, scale = kernels.quantize_int8(weight)
            else:
                q, scale = np.empty(weight.shape, np.int8), np.empty(weight.shape[0], np.float32)
            module.weight = Parameter._wrap(q, requires_grad=False)
            module.register_buffer("weight_scale", scale)
    return model


def quantization_config():
    """The `quantization_config` entry of a quantized checkpoint's config.json."""
    return {"quant_method": METHOD, "bits": 8, "symmetric": True, "granularity": "per_output_channel",
            "weight_layout": "(out_features, in_features) int8 weight, float32 weight_scale (out_features,)",
            "modules": "every Linear and Embedding"}


def check_quantization_config(config, path):
    """Raise ValueError unless a checkpoint's `quantization_config` is minigen's int8 scheme."""
    if not isinstance(config, dict) or config.get("quant_method") != METHOD or config.get("bits") != 8 \
            or config.get("granularity") != "per_output_channel":
        raise ValueError(f"{path}: quantization_config {config!r:.200} is not minigen's int8 scheme "
                         f"(quant_method {METHOD!r}, bits 8, granularity 'per_output_channel')")

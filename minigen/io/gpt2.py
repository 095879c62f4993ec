"""GPT-2 checkpoints in Hugging Face's layout: config keys and parameter names.

A directory written by transformers' `GPT2LMHeadModel.save_pretrained` holds `config.json` (GPT-2 keys such as
`n_positions`, `activation_function`) and `model.safetensors` whose names are minigen's with or without the
`transformer.` prefix. GPT-2's Conv1D layers store their weights (in, out); minigen's Linear stores (out, in),
so exactly those four weights are transposed on the way in and out: on the way in as views (no copy; the
Linear kernels take a weight whose transpose is contiguous as it lies), on the way out as copies.
"""
import numpy as np

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# names outside the GPT-2 body: the language-model head and GPT2ForSequenceClassification's head
HEAD_PREFIXES = ("transformer.", "lm_head.", "score.")
# the weights whose layer has a bias in transformers' GPT-2 (output vectors of length weight.shape[0])
BIASED_WEIGHTS = CONV1D_WEIGHTS + ("ln_1.weight", "ln_2.weight", "ln_f.weight")
# buffers of old GPT-2 checkpoints (the causal mask), not parameters
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")

CONFIG_SCHEMA = {"vocab_size": int, "n_positions": int, "n_layer": int, "n_head": int, "n_embd": int}


def config_from_hf(hf, path="config.json"):
    """A GPTConfig keyword dict from a Hugging Face GPT-2 config dict (validated)."""
    from .config import check_fields
    check_fields(hf, CONFIG_SCHEMA, path)
    for key, expected in (("layer_norm_epsilon", (int, float)), ("activation_function", str),
                          ("tie_word_embeddings", bool), ("resid_pdrop", (int, float)), ("bias", bool)):
        if key in hf and (not isinstance(hf[key], expected) or (expected != bool and isinstance(hf[key], bool))):
            raise ValueError(f"{path}: field {key!r} has value {hf[key]!r}, expected {expected}")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise ValueError(f"{path}: n_inner={hf['n_inner']} is not supported (minigen's MLP is 4 * n_embd wide)")
    return {
        "vocab_size": hf["vocab_size"], "block_size": hf["n_positions"], "n_layer": hf["n_layer"],
        "n_head": hf["n_head"], "n_embd": hf["n_embd"], "dropout": float(hf.get("resid_pdrop", 0.0)),
        "bias": hf.get("bias", True), "layer_norm_epsilon": float(hf.get("layer_norm_epsilon", 1e-5)),
        "activation": hf.get("activation_function", "gelu_new"),
        "tie_word_embeddings": hf.get("tie_word_embeddings", True),
        "bos_token_id": _token_id(hf, "bos_token_id", path), "eos_token_id": _token_id(hf, "eos_token_id", path),
    }


def _token_id(hf, key, path):
    """A special token id of the config: an int, the first of a list, or None."""
    value = hf.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ValueError(f"{path}: field {key!r} has value {value!r}, expected a token id >= 0 or null")
    return value


def config_to_hf(cfg):
    """A Hugging Face GPT-2 config dict from GPTConfig fields."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg["vocab_size"], "n_positions": cfg["block_size"], "n_ctx": cfg["block_size"],
        "n_layer": cfg["n_layer"], "n_head": cfg["n_head"], "n_embd": cfg["n_embd"], "n_inner": None,
        "activation_function": cfg["activation"], "layer_norm_epsilon": cfg["layer_norm_epsilon"],
        "resid_pdrop": cfg["dropout"], "embd_pdrop": cfg["dropout"], "attn_pdrop": cfg["dropout"],
        "tie_word_embeddings": cfg["tie_word_embeddings"], "bias": cfg["bias"],
        "bos_token_id": cfg.get("bos_token_id"), "eos_token_id": cfg.get("eos_token_id"),
        "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
    }


def state_dict_from_hf(tensors, bias=True):
    """minigen names and layouts from a GPT-2 safetensors dict.

    For a model without biases (`bias=False`), bias tensors in the file must be all zero (as
    `state_dict_to_hf` writes them for transformers, whose GPT-2 always has biases) and are dropped."""
    out = {}
    for name, arr in tensors.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        key = name if name.startswith(HEAD_PREFIXES) else "transformer." + name
        if not bias and key.endswith(".bias"):
            if np.any(arr):
                raise ValueError(f"checkpoint tensor {name!r} is non-zero but the config says bias=false")
            continue
        if key.endswith(CONV1D_WEIGHTS) and arr.dtype != np.int8:  # int8 weights are stored (out, in)
            arr = arr.T
        out[key] = arr
    return out


def state_dict_to_hf(state_dict, tie_word_embeddings=True, bias=True):
    """GPT-2 names (with the `transformer.` prefix, as GPT2LMHeadModel saves) and Conv1D layouts.

    transformers' GPT-2 always has biases: for a model without them (`bias=False`) zeros are written,
    which computes the same function."""
    out = {}
    for key, arr in state_dict.items():
        if not bias and key.endswith(BIASED_WEIGHTS):
            out[key[:-len("weight")] + "bias"] = np.zeros(arr.shape[0], arr.dtype)
        if key.endswith(CONV1D_WEIGHTS) and arr.dtype != np.int8:  # int8 weights stay (out, in), see nn.quantize
            arr = np.ascontiguousarray(arr.T)
        out[key] = arr
    if tie_word_embeddings:
        out.pop("lm_head.weight", None)  # tied to transformer.wte.weight, saved once as HF does
    return out

"""Converting published ViT weights to this package's names, and fitting them to a model.

    state, recorded = read_state(Path("model.safetensors"))
    state = convert_state(detect_format(state, ".safetensors"), state)   # our names, numpy arrays
    state, notes, reinit = adapt_to_model(state, shapes)                  # head / pos_embed to the model
    check_fit(shapes, state, allow_missing=reinit)                        # strict: raises naming every key

Command line (writes a .ckpt that `create_model(...)` loads with no missing or unexpected keys):

    python -m vit_ms.convert --from timm --src model.safetensors --model vit_b16 --out vit_b16.ckpt

`sources.py` reads and renames each source's weights; `fit.py` infers the architecture from shapes,
resamples position embeddings and checks the fit; `__main__.py` is the command line.
"""
from .fit import adapt_to_model, bicubic_matrix, check_fit, infer_architecture, resample_pos_embed
from .sources import (CONVERTERS, METADATA_KEY, OPTIMIZER_STATE_KEYS, OPTIMIZER_STATE_PREFIXES, SOURCE_FORMATS,
                      SOURCE_OVERRIDES, convert_mindcv, convert_npz, convert_state, convert_timm, convert_tutorial,
                      detect_format, is_optimizer_state, read_state, save_state, strip_optimizer_state)

__all__ = ["CONVERTERS", "METADATA_KEY", "OPTIMIZER_STATE_KEYS", "OPTIMIZER_STATE_PREFIXES", "SOURCE_FORMATS",
           "SOURCE_OVERRIDES", "adapt_to_model", "bicubic_matrix", "check_fit", "convert_mindcv", "convert_npz",
           "convert_state", "convert_timm", "convert_tutorial", "detect_format", "infer_architecture",
           "is_optimizer_state", "read_state", "resample_pos_embed", "save_state", "strip_optimizer_state"]

"""Convert published ViT weights to a MindSpore checkpoint of this package's ViT.

    python -m vit_ms.convert --from timm --src model.safetensors --model vit_b16 --out vit_b16.ckpt
    python -m vit_ms.convert --src vit_b16.augreg_in21k_ft_in1k_jax --model vit_b16 --num-classes 102 --out b16.ckpt

--src is a file, a URL or a name in vit_ms.weights.hub.PRETRAINED (downloaded into $VIT_MS_CACHE, default
~/.cache/vit_ms). The output loads into create_model(...) with no missing or unexpected keys; with another
--num-classes the head is left out (and initialised when loaded), with another --image-size the position
embedding is resampled. The model.* settings to train or evaluate with it are printed at the end.
"""
import argparse
import os
from pathlib import Path
from typing import List, Optional, Sequence

from ..errors import UserError
from .fit import infer_architecture
from .hub import cache_dir_from_env, format_override
from .sources import SOURCE_FORMATS, SOURCE_OVERRIDES, save_state

ARCH_OPTIONS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit_ms.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source_format", default="auto", choices=("auto",) + SOURCE_FORMATS,
                   help="where the weights come from (auto: judged by the file's keys)")
    p.add_argument("--src", required=True, help="weights: a file, a URL or a vit_ms.weights.hub.PRETRAINED name")
    p.add_argument("--model", required=True, help="our model name, e.g. vit_b16 (vit_ms/variants.py)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of the new head (default: the weights')")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: the weights'); "
                   "another size resamples the position embedding")
    for opt in ARCH_OPTIONS:
        p.add_argument(f"--{opt.replace('_', '-')}", type=float if opt == "mlp_ratio" else int, default=None,
                       help=f"override the variant's {opt} (as model.{opt})")
    p.add_argument("--out", required=True, help="output .ckpt file (written atomically)")
    p.add_argument("--sha256", default="", help="expected sha256 of a downloaded --src")
    p.add_argument("--cache-dir", default=None, help="download cache (default: $VIT_MS_CACHE or ~/.cache/vit_ms)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_classes is not None and args.num_classes < 0:
        raise UserError(f"--num-classes={args.num_classes} must be >= 0 (0: no head)")
    # MindSpore takes seconds to import: loaded once the arguments are good, so --help and usage errors answer at once
    from ..models import create_model
    from .load import fit_weights, model_param_shapes, read_weights

    cache_dir = Path(args.cache_dir) if args.cache_dir else cache_dir_from_env(os.environ)
    weights = read_weights(args.src, source_format=args.source_format, sha256=args.sha256, cache_dir=cache_dir)
    path, fmt = weights.path, weights.source_format
    arch = infer_architecture(weights.state)

    num_classes = arch["num_classes"] if args.num_classes is None else args.num_classes
    image_size = args.image_size or arch["image_size"]
    keeps_head = num_classes == arch["num_classes"]
    overrides = {opt: getattr(args, opt) for opt in ARCH_OPTIONS if getattr(args, opt) is not None}
    overrides["representation_size"] = arch["representation_size"] if keeps_head else None
    if arch["fc_norm"]:  # timm / MAE average-pool head
        overrides.update(global_pool="avg", fc_norm=True)
    model = create_model(args.model, num_classes=num_classes, image_size=image_size, **overrides)
    shapes = model_param_shapes(model)
    state, notes, _ = fit_weights(weights.state, shapes)

    model_overrides = weights.model_overrides
    save_state(state, Path(args.out), model_overrides, order=shapes)
    settings = {"name": args.model, "num_classes": num_classes, "image_size": image_size, **overrides,
                **model_overrides, "pretrained": args.out}
    settings = {k: v for k, v in settings.items() if not (k == "representation_size" and v is None)}
    lines: List[str] = [f"wrote {args.out}: {len(state)} tensors from {path} ({fmt} weights, {arch['depth']} "
                        f"blocks, width {arch['embed_dim']}, patch {arch['patch_size']})", *notes]
    if SOURCE_OVERRIDES[fmt]:
        lines.append(f"these {fmt} weights were trained with " +
                     ", ".join(format_override(f"model.{k}", v) for k, v in SOURCE_OVERRIDES[fmt].items()) +
                     ": set them too, or outputs differ from the source's")
    lines.append("use it with: " + " ".join(f"--set {format_override(f'model.{k}', v)}" for k, v in settings.items()))
    print("\n".join(lines))
    return 0


"""python -m vit_ms.convert: weights in (published weights -> one of our checkpoints) and weights out (one of our
checkpoints -> a timm / Hugging Face folder), each direction with its own parser.

    python -m vit_ms.convert --src WEIGHTS --model NAME --out FILE [options]     # in: build_parser, convert_in
    python -m vit_ms.convert --to timm CKPT OUT [options]                         # out: build_timm_parser, convert_out

`main` looks for `--to` (parse_known_args) and hands every argument to that direction; `-h` without `--to` is
the weights-in page, which ends with the weights-out usage.
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .cli import add_weights_argument
from .errors import UserError, run_cli
from .fs import atomic_writer, write_text_atomic
from .logs import setup_logging
from .weights.fit import infer_architecture
from .weights.hub import cache_dir_from_env, format_override
from .weights.sources import SOURCE_FORMATS, SOURCE_OVERRIDES, save_state

WEIGHTS_IN = """Weights in: published ViT weights as a MindSpore checkpoint of this package's ViT.

    python -m vit_ms.convert --from timm --src model.safetensors --model vit_b16 --out vit_b16.ckpt
    python -m vit_ms.convert --src vit_b16.augreg_in21k_ft_in1k_jax --model vit_b16 --num-classes 102 --out b16.ckpt

--src is a file, a URL or a name in vit_ms.weights.hub.PRETRAINED (downloaded into $VIT_MS_CACHE, default
~/.cache/vit_ms). The output loads into create_model(...) with no missing or unexpected keys; with another
--num-classes the head is left out (and initialised when loaded), with another --image-size the position
embedding is resampled. The model.* settings to train or evaluate with it are printed at the end.

Weights out: `python -m vit_ms.convert --to timm CKPT OUT` writes one of our checkpoints as a Hugging Face-style
folder for timm (its own options: `--to timm -h`).
"""
WEIGHTS_OUT = """Weights out: one of our checkpoints as a Hugging Face-style folder that timm (and the hub) load.

    python -m vit_ms.convert --to timm runs/deit/best.ckpt deit_b16_hf [--weights raw|ema]

OUT gets `model.safetensors` (timm's parameter names) and `config.json` (architecture, num_classes, model_args,
pretrained_cfg with input size, mean/std, interpolation, crop_pct, and the class names), see
vit_ms/weights/timm_layout.py. In PyTorch:

    timm.create_model("hf-hub:<user>/<repo>", pretrained=True)             # after uploading OUT to the hub
    timm.create_model("local-dir:OUT", pretrained=True)                    # timm >= 1.0.20
    timm.create_model(<config.json architecture>, pretrained=True, num_classes=K, **<model_args>,
                      pretrained_cfg_overlay=dict(file="OUT/model.safetensors", num_classes=K))

(the overlay's num_classes keeps timm from dropping a head whose size differs from its default table entry's).

`--weights` picks, in a checkpoint trained with train.ema, the raw weights or their average (default: the ones
the checkpoint records as best), as the ONNX/MindIR exporter does.
"""

log = logging.getLogger("vit_ms")
ARCH_OPTIONS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


def build_parser() -> argparse.ArgumentParser:
    """The weights-in options; `--to` hands the command to the weights-out parser (`main`), whose usage the
    help's end shows."""
    out_usage = build_timm_parser().format_usage().removeprefix("usage: ").strip()
    p = argparse.ArgumentParser(prog="python -m vit_ms.convert", description=WEIGHTS_IN,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"weights out (--to timm CKPT OUT: one of our checkpoints as a timm / Hugging "
                                       f"Face folder; its options: --to timm -h):\n  {out_usage}")
    p.add_argument("--to", choices=("timm",), default=None,
                   help="write one of our checkpoints in this layout instead (weights out: --to timm CKPT OUT)")
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


def convert_in(argv: Sequence[str]) -> int:
    """Weights in: the command without --to."""
    args = build_parser().parse_args(argv)
    if args.num_classes is not None and args.num_classes < 0:
        raise UserError(f"--num-classes={args.num_classes} must be >= 0 (0: no head)")
    # MindSpore takes seconds to import: loaded once the arguments are good, so --help and usage errors answer at once
    from .models import create_model
    from .weights.load import fit_weights, model_param_shapes, read_weights

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
    if arch["distilled"]:  # DeiT: distillation token and head_dist
        overrides["distilled"] = True
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


FILES = ("model.safetensors", "config.json")


def build_timm_parser() -> argparse.ArgumentParser:
    """The weights-out options (python -m vit_ms.convert --to timm)."""
    p = argparse.ArgumentParser(prog="python -m vit_ms.convert --to timm", description=WEIGHTS_OUT,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--to", required=True, choices=("timm",), help="the layout to write (timm / Hugging Face)")
    add_weights_argument(p)
    p.add_argument("--config", default=None, help="config for a checkpoint that records none (vit_ms.convert's)")
    p.add_argument("--force", action="store_true", help="replace model.safetensors / config.json already in OUT")
    p.add_argument("ckpt", help="one of our checkpoints (train.py's, or vit_ms.convert's with --config)")
    p.add_argument("out", help="output folder (created); gets model.safetensors and config.json")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def export_timm(ckpt: str, out: os.PathLike, weights: Optional[str] = None, config_path: Optional[str] = None,
                force: bool = False) -> dict:
    """Write `ckpt`'s weights in timm's layout into the folder `out`; returns the config.json written."""
    # MindSpore takes seconds to import: loaded when a checkpoint is converted, so --help answers at once
    from safetensors.numpy import save  # a runtime dependency; only this command writes safetensors
    from .loader.opener import inference_config, open_weights
    from .models.vit import VisionTransformer
    from .variants import resolve_architecture
    from .weights.checkpoint import chosen_weights
    from .weights.fit import check_fit
    from .weights.timm_layout import hf_config, to_timm_state, untaught_dist_head

    source = open_weights(ckpt)
    if not source.is_checkpoint:
        raise UserError(f"'{ckpt}' is not one of our checkpoints; --to timm writes a vit_ms .ckpt (published "
                        f"weights are timm's already, or load them first: python -m vit_ms.convert --src ...)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out}' is a file; --to timm writes a folder (model.safetensors and config.json in it): "
                        f"give a folder path, e.g. '{out.with_name(out.stem + '_timm')}'")
    present = [name for name in FILES if (out / name).exists()]
    if present and not force:
        raise UserError(f"'{out}' already holds {', '.join(present)}; choose another folder or pass --force to "
                        f"replace them")
    cfg = inference_config(source, config_path)
    arch = resolve_architecture(cfg.model)
    state = {k: v.asnumpy() for k, v in chosen_weights(source.params, weights, ckpt).items()}
    check_fit({p.name: tuple(p.shape) for p in VisionTransformer(arch).get_parameters()}, state)
    tensors = to_timm_state(state, arch, source.meta.trained_heads)
    if untaught_dist_head(arch, source.meta.trained_heads):
        log.info("head_dist was trained by no teacher: model.safetensors holds head doubled and head_dist as zeros, "
                 "so timm's average of the two heads is exactly the class head's logits")
    config = hf_config(arch, cfg.data.mean, cfg.data.std, cfg.data.interpolation, cfg.data.crop_pct,
                       source.class_names)
    try:  # each file whole or left as it was (vit_ms.fs); save() to bytes: save_file's errors are not OSErrors
        out.mkdir(parents=True, exist_ok=True)
        with atomic_writer(out / "model.safetensors", "wb") as f:
            f.write(save(tensors, metadata={"format": "pt"}))  # "pt": what transformers/timm expect
        write_text_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    except OSError as err:
        raise UserError(f"could not write '{out}': {err.strerror}; choose a writable folder with free space") from err
    return config


def convert_out(argv: Sequence[str]) -> int:
    """Weights out: the command with --to."""
    args = build_timm_parser().parse_args(argv)
    setup_logging(None, 0)
    config = export_timm(args.ckpt, args.out, args.weights, args.config, args.force)
    args_text = ", ".join(f"{k}={v!r}" for k, v in config["model_args"].items())
    print(f"wrote {args.out}/model.safetensors and config.json ({config['architecture']}, "
          f"{config['num_classes']} classes) from {args.ckpt}\n"
          f"timm: timm.create_model('{config['architecture']}', pretrained=True, num_classes={config['num_classes']}, "
          f"{args_text}, pretrained_cfg_overlay=dict(file='{args.out}/model.safetensors', "
          f"num_classes={config['num_classes']}))\n"
          f"or: timm.create_model('local-dir:{args.out}', pretrained=True)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    direction = argparse.ArgumentParser(prog="python -m vit_ms.convert", add_help=False)
    direction.add_argument("--to", choices=("timm",), default=None)
    known, _ = direction.parse_known_args(argv)
    return convert_out(argv) if known.to else convert_in(argv)


if __name__ == "__main__":
    sys.exit(run_cli(main))

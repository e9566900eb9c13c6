"""Weights out: one of our checkpoints as a Hugging Face-style folder that timm (and the hub) load.

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
import argparse
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from ..models.vit import VisionTransformer
from ..variants import resolve_architecture
from ..weights.fit import check_fit
from ..weights.timm_layout import hf_config, to_timm_state
from .loader import WEIGHTS, checkpoint_weights, inference_config, open_weights

FILES = ("model.safetensors", "config.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vit_ms.convert --to timm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p)
    p.add_argument("ckpt", help="one of our checkpoints (train.py's, or vit_ms.convert's with --config)")
    p.add_argument("out", help="output folder (created); gets model.safetensors and config.json")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    return p


def add_options(p) -> None:
    """The weights-out options, on this command's parser or on a group of python -m vit_ms.convert's help."""
    p.add_argument("--to", required=True, choices=("timm",), help="the layout to write (timm / Hugging Face)")
    p.add_argument("--weights", choices=WEIGHTS, default=None,
                   help="raw or EMA weights of a train.ema checkpoint (default: the ones it records as best)")
    p.add_argument("--config", default=None, help="config for a checkpoint that records none (vit_ms.convert's)")
    p.add_argument("--force", action="store_true", help="replace model.safetensors / config.json already in OUT")


def export_timm(ckpt: str, out: os.PathLike, weights: Optional[str] = None, config_path: Optional[str] = None,
                force: bool = False) -> dict:
    """Write `ckpt`'s weights in timm's layout into the folder `out`; returns the config.json written."""
    from safetensors.numpy import save_file  # a runtime dependency; only this command writes safetensors

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
    state = {k: v.asnumpy() for k, v in checkpoint_weights(source, weights).items()}
    check_fit({p.name: tuple(p.shape) for p in VisionTransformer(arch).get_parameters()}, state)
    tensors = to_timm_state(state, arch)
    config = hf_config(arch, cfg.data.mean, cfg.data.std, cfg.data.interpolation, cfg.data.crop_pct,
                       source.class_names)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp_weights, tmp_config = out / ".model.safetensors.partial", out / ".config.json.partial"
        save_file(tensors, str(tmp_weights), metadata={"format": "pt"})  # "pt": what transformers/timm expect
        tmp_config.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_weights, out / "model.safetensors")
        os.replace(tmp_config, out / "config.json")
    except OSError as err:
        raise UserError(f"could not write '{out}': {err.strerror}; choose a writable folder with free space") from err
    return config


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = export_timm(args.ckpt, args.out, args.weights, args.config, args.force)
    args_text = ", ".join(f"{k}={v!r}" for k, v in config["model_args"].items())
    print(f"wrote {args.out}/model.safetensors and config.json ({config['architecture']}, "
          f"{config['num_classes']} classes) from {args.ckpt}\n"
          f"timm: timm.create_model('{config['architecture']}', pretrained=True, num_classes={config['num_classes']}, "
          f"{args_text}, pretrained_cfg_overlay=dict(file='{args.out}/model.safetensors', "
          f"num_classes={config['num_classes']}))\n"
          f"or: timm.create_model('local-dir:{args.out}', pretrained=True)")
    return 0

"""Export a trained ViT to MindIR or ONNX, prove the file reproduces the model, and describe it in a sidecar.

    python -m vit_ms.export --ckpt runs/demo/best.ckpt --format onnx --batch 8   # [--config yaml] [--set k=v]

The command line only; the exporter is vit_ms/inference/to_mindir_onnx.py.
"""
import os
import sys
from typing import Optional, Sequence

from .cli import add_weights_argument, base_parser
from .errors import run_cli
from .loader.exported import FORMATS, sidecar_path


def build_parser():
    parser = base_parser(__doc__.split("\n\n")[0], config_required=False, prog="python -m vit_ms.export")
    parser.add_argument("--ckpt", required=True, help="checkpoint to export (e.g. runs/<name>/best.ckpt)")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="mindir or onnx")
    parser.add_argument("--batch", default="1", help="fixed batch size N (default 1) or 'dynamic' (MindIR only)")
    parser.add_argument("--out", default=None, help="output file (default: the checkpoint's path with the "
                                                     "format's suffix); the sidecar is <out>.json")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip running the exported file against the model")
    add_weights_argument(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    # MindSpore takes seconds to import: loaded once the arguments parse, so --help and usage errors answer at once
    from .inference.to_mindir_onnx import export, parse_batch
    from .weights.hub import cache_dir_from_env

    batch = parse_batch(args.batch)
    path, sidecar = export(args.ckpt, args.format, batch, args.out, args.check, config_path=args.config,
                           overrides=args.overrides, weights=args.weights,
                           cache_dir=cache_dir_from_env(os.environ))
    parity = sidecar["parity_max_abs_diff"]
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and {sidecar_path(path)}; batch {sidecar['batch']}; "
          + (f"max |logit difference| vs the checkpoint's model {parity:.2g}" if parity is not None
             else "parity not checked (--no-check)"))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

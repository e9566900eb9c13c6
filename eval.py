"""Score a checkpoint on the validation split: python eval.py --config <yaml> --ckpt <file> [--set k=v ...]

Prints a summary, then as its last line one JSON object with top1, top5, loss, num_images, images_per_sec.
"""
import json
import sys

from vit_ms.cli import base_parser, config_from_args
from vit_ms.errors import run_cli


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--ckpt", required=True, help="checkpoint to evaluate (e.g. runs/<name>/best.ckpt)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from vit_ms.trainer import run_evaluation

    metrics = run_evaluation(cfg, args.ckpt)
    print(f"top-1 {metrics['top1'] * 100:.2f}%  top-5 {metrics['top5'] * 100:.2f}%  loss {metrics['loss']:.4f}  "
          f"({metrics['num_images']} images, {metrics['images_per_sec']:.1f} images/s)")
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

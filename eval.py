"""Score a checkpoint on the validation split: python eval.py --ckpt runs/<name>/best.ckpt [--config <yaml>] [--set k=v ...]

A checkpoint written by train.py records its config, so --config is needed only for older files or published
weights without a table entry; --set changes any key (e.g. data.root). Prints a summary, then as its last line
one JSON object with top1, top5, loss, num_images, images_per_sec.
"""
import json
import sys

from vit_ms.cli import add_weights_argument, base_parser
from vit_ms.errors import run_cli


def main(argv=None) -> int:
    parser = base_parser(__doc__, config_required=False)
    parser.add_argument("--ckpt", required=True, help="checkpoint (e.g. runs/<name>/best.ckpt), or published weights "
                                                       "(a vit_ms.weights.hub.PRETRAINED name, a file or a URL)")
    add_weights_argument(parser)
    args = parser.parse_args(argv)
    from vit_ms.inference.evaluate import run_evaluation

    metrics = run_evaluation(args.ckpt, args.config, args.overrides, which=args.weights)
    print(f"top-1 {metrics['top1'] * 100:.2f}%  top-5 {metrics['top5'] * 100:.2f}%  loss {metrics['loss']:.4f}  "
          f"({metrics['num_images']} images, {metrics['images_per_sec']:.1f} images/s)")
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

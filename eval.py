"""Score a checkpoint on the validation split: python eval.py --ckpt runs/<name>/best.ckpt [--config <yaml>] [--set k=v ...]

A checkpoint written by train.py records its config, so --config is needed only for older files or published
weights without a table entry; --set changes any key (e.g. data.root). Writes per_class.csv (class, images,
top1, most_confused_with) and confusion.png into eval/<checkpoint name>/ beside the checkpoint (or --out DIR).
Prints a summary and the 5 classes with the lowest top-1, then as its last line one JSON object with top1,
top5, loss, num_images, images_per_sec.
"""
import json
import os
import sys

from vit_ms.cli import add_weights_argument, base_parser
from vit_ms.errors import run_cli

WORST_SHOWN = 5


def build_parser():
    parser = base_parser(__doc__, config_required=False)
    parser.add_argument("--ckpt", required=True, help="checkpoint (e.g. runs/<name>/best.ckpt), or published weights "
                                                       "(a vit_ms.weights.hub.PRETRAINED name, a file or a URL)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder for per_class.csv and confusion.png (default: eval/<name>/ beside the checkpoint)")
    add_weights_argument(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # MindSpore takes seconds to import: loaded once the arguments are good, so --help and usage errors answer at once
    from vit_ms.inference.evaluate import run_evaluation
    from vit_ms.inference.per_class import describe, worst_classes
    from vit_ms.weights.hub import cache_dir_from_env

    report = run_evaluation(args.ckpt, args.config, args.overrides, args.out, which=args.weights,
                            cache_dir=cache_dir_from_env(os.environ))
    metrics = report.metrics
    print(f"top-1 {metrics['top1'] * 100:.2f}%  top-5 {metrics['top5'] * 100:.2f}%  loss {metrics['loss']:.4f}  "
          f"({metrics['num_images']} images, {metrics['images_per_sec']:.1f} images/s)")
    print(f"worst {WORST_SHOWN} classes by top-1:")
    for result in worst_classes(report.per_class, WORST_SHOWN):
        print(f"  {describe(result)}")
    if report.out_dir is not None:
        written = "per_class.csv" + (" and confusion.png" if report.confusion_png else "")
        print(f"wrote {written} to {report.out_dir}")
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

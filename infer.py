"""Label images with a trained ViT, from the checkpoint you give or from an exported MindIR / ONNX file.

    python infer.py --ckpt runs/demo/best.ckpt photos/ cat.jpg [--topk 5] [--json]   # [--config yaml] [--set k=v]
    python infer.py --model runs/demo/best.onnx photos/      # written by python -m vit_ms.export (+ .json sidecar)

PATH is an image or a folder (searched recursively for image files). Prints each image's top-k classes with
softmax probabilities, or with --json one object per line: {"path", "topk": [{"class", "index", "prob"}]}.
A checkpoint written by train.py records its config and class names; --config is needed only for older files.
Class names come from --class-names, else the checkpoint (or classes.txt beside it), else the export's sidecar.
Unreadable images are reported on stderr ("skipped <path>: <reason>") and the rest are labelled; the exit
code is 0 when at least one image was labelled.
--attention-maps DIR (checkpoints only) also saves DIR/<image name>.png per image: the image, the attention
rollout and the last layer's class-token attention as overlays (the model then runs in PyNative mode).
"""
import argparse
import json
import os
import sys

from vit_ms.cli import add_weights_argument, base_parser
from vit_ms.errors import DataError, UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser(__doc__, config_required=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument("--ckpt", help="checkpoint whose weights label the images (e.g. runs/<name>/best.ckpt)")
    parser.add_argument("--model", help="exported .mindir or .onnx file (its <file>.json sidecar must be beside it)")
    parser.add_argument("--topk", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per image")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default 16; a fixed-batch export uses its own)")
    parser.add_argument("--class-names", help="text file with one class name a line, in class-index order")
    parser.add_argument("--attention-maps", metavar="DIR",
                        help="also save per image a PNG of where the class token attends (needs --ckpt)")
    add_weights_argument(parser)
    return parser


def parse_args(argv) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model and args.weights:
        parser.error("--weights applies to --ckpt; an exported file holds one set of weights")
    if bool(args.ckpt) == bool(args.model):
        parser.error("give exactly one of --ckpt (with --config) and --model")
    if args.topk < 1:
        parser.error(f"--topk must be at least 1, got {args.topk}")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    return args


def text_line(path, top) -> str:
    return f"{path}: " + ", ".join(f"{t['class']} {t['prob']:.4f}" for t in top)


def main(argv=None) -> int:
    args = parse_args(argv)
    # MindSpore takes seconds to import: loaded once the arguments are good, so --help and usage errors answer at once
    from vit_ms.inference import predict
    from vit_ms.inference.attention_maps import prepare_out_dir, write_attention_maps
    from vit_ms.loader.exported import export_format
    from vit_ms.loader.opener import open_model
    from vit_ms.weights.hub import cache_dir_from_env

    images, notes = predict.collect_images(args.paths)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.model and args.attention_maps:
        raise UserError(f"--attention-maps needs a checkpoint: '{args.model}' is an exported graph that computes "
                        f"only the logits, not the attention probabilities. Pass the checkpoint it was exported "
                        f"from with --ckpt (e.g. runs/<name>/best.ckpt)")
    if args.attention_maps:
        prepare_out_dir(args.attention_maps)  # an unusable folder stops here, before anything is labelled
    if args.model:
        export_format(args.model)  # --model takes an exported file only
    # maps read the blocks one by one, in float32: amp O1's rewritten blocks lack the probabilities method
    eager = ["train.mode=pynative", "amp.level=O0", "amp.dtype=auto", "amp.norms=auto"] if args.attention_maps else []
    loaded = open_model(args.model or args.ckpt, cache_dir_from_env(os.environ), config_path=args.config,
                        overrides=args.overrides + eager, weights=args.weights, exported=bool(args.model))
    cfg, recorded = loaded.cfg, loaded.class_names
    if loaded.sidecar is not None:
        where, predictor = "the export's sidecar", predict.exported_predictor(args.model, cfg, loaded.sidecar)
    else:
        where, predictor = f"'{args.ckpt}'", predict.network_predictor(loaded.network, cfg)
    names, note = predict.class_names_for(cfg.model.num_classes, args.class_names, recorded, where)
    if note:
        print(note, file=sys.stderr)

    def skip(path, reason: str) -> None:
        print(f"skipped {path}: {reason}", file=sys.stderr)

    labelled = 0
    for path, probs in predictor.predict(images, args.batch_size, skip):
        top = predict.top_k(probs, args.topk, names)
        print(json.dumps({"path": str(path), "topk": top}) if args.json else text_line(path, top), flush=True)
        labelled += 1
    if not labelled:
        raise DataError(f"none of the {len(images)} image file(s) could be labelled (see the messages above)")
    if args.attention_maps:
        written = write_attention_maps(loaded.network, cfg, images, args.attention_maps, names,
                                       args.batch_size or predict.DEFAULT_BATCH_SIZE,
                                       on_skip=lambda *_: None)  # already reported by the labelling pass
        print(f"wrote {len(written)} attention map(s) to {args.attention_maps}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

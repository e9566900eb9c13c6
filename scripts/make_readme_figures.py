"""Make the README's pictures from the offline demo: curves, confusion matrix, attention maps.

    python scripts/make_readme_figures.py                 # trains runs/demo first if it has no best.ckpt
    python scripts/make_readme_figures.py --run runs/demo --out docs

Writes <out>/demo_curves.png (the run's curves.png), <out>/demo_confusion.png (eval.py's confusion matrix of
best.ckpt on the validation split) and <out>/demo_attention.png (infer.py --attention-maps on one validation
image per listed digit, stacked), and checks each is under 200 KB.
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vit_ms.errors import UserError, run_cli  # noqa: E402

MAX_BYTES = 200 * 1024
DIGITS = ("3", "7")  # one validation image of each in the attention picture


def ensure_run(run_dir: Path) -> None:
    if (run_dir / "best.ckpt").is_file():
        return
    from vit_ms.config_loader import load_config  # MindSpore (seconds) loads only when the run must be trained
    from vit_ms.train.trainer import run_training

    print(f"no {run_dir / 'best.ckpt'}: training the demo first (a few minutes on a CPU)")
    run_training(load_config("demo.yaml", [f"output_dir={run_dir.parent}", f"run_name={run_dir.name}"]))


def stack_vertically(parts, target: Path) -> None:
    images = [Image.open(p).convert("RGB") for p in parts]
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height
    canvas.save(target, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="the demo's run directory (default runs/demo)")
    parser.add_argument("--out", default="docs", help="folder for the PNGs (default docs)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    run_dir, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_run(run_dir)

    # after the demo run exists (ensure_run may train it); MindSpore takes seconds to import
    from vit_ms.figures.run_curves import plot_run
    from vit_ms.inference.attention_maps import write_attention_maps
    from vit_ms.inference.evaluate import run_evaluation
    from vit_ms.loader.opener import open_model
    from vit_ms.weights.hub import cache_dir_from_env

    written = [plot_run(run_dir, out / "demo_curves.png")]
    ckpt = str(run_dir / "best.ckpt")
    with tempfile.TemporaryDirectory() as tmp:
        report = run_evaluation(ckpt, out=tmp, cache_dir=cache_dir_from_env(os.environ))
        if report.confusion_png is None:
            raise UserError("the confusion matrix could not be drawn (see the warning above)")
        written.append(Path(shutil.copy(report.confusion_png, out / "demo_confusion.png")))
        loaded = open_model(ckpt, cache_dir_from_env(os.environ), overrides=["train.mode=pynative"])
        val = Path(loaded.cfg.data.root) / loaded.cfg.data.val_split
        images = [sorted((val / digit).glob("*.png"))[0] for digit in DIGITS]
        maps = write_attention_maps(loaded.network, loaded.cfg, images, Path(tmp) / "maps", loaded.class_names)
        stack_vertically(maps, out / "demo_attention.png")
        written.append(out / "demo_attention.png")
    for path in written:
        size = path.stat().st_size
        print(f"wrote {path} ({size / 1024:.0f} KB)")
        if size > MAX_BYTES:
            raise UserError(f"{path} is {size / 1024:.0f} KB, over the README's 200 KB per picture")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

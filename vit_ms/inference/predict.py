"""Label images with a trained ViT, from a checkpoint or from an exported MindIR / ONNX file.

    predictor = network_predictor(network, cfg)        # or exported_predictor(path, cfg, sidecar)
    for path, probs in predictor.predict(paths, batch_size=16, on_skip=report):
        print(path, top_k(probs, 5, class_names))

Images are read and preprocessed by `vit_ms.data.load_image_rgb` and `vit_ms.data.preprocess_eval`, the
transforms evaluation uses. An unreadable image goes to `on_skip` and the others carry on
(`data.on_bad_image=error` stops at the first one instead).
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np

from ..config import Config, DataConfig
from ..data import IMAGE_EXTENSIONS, load_image_rgb, preprocess_eval
from ..data.folder import read_class_names
from ..data.images import UnusableImage
from ..errors import DataError, UserError
from ..loader.exported import export_format, open_exported_runner
from ..runtime import setup_runtime

DEFAULT_BATCH_SIZE = 16


# ----------------------------------------------------------------------------------------------------------
# Inputs: image paths and class names


def collect_images(paths: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Each file as given, and the image files under each folder (recursively, sorted); duplicates once.

    Returns the files and notes about folder entries left out. A path that does not exist raises DataError.
    """
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise DataError(f"path not found: {', '.join(repr(p) for p in missing)}; give image files or folders "
                        f"of images")
    files: List[Path] = []
    notes: List[str] = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(f for f in path.rglob("*") if f.is_file())
        images = [f for f in found if f.suffix.lower() in IMAGE_EXTENSIONS]
        if len(images) < len(found):
            notes.append(f"{path}: left out {len(found) - len(images)} file(s) without an image extension")
        if not images:
            notes.append(f"{path}: no image files")
        files.extend(images)
    return list(dict.fromkeys(files)), notes


def class_names_for(num_classes: int, names_file: Optional[str] = None, recorded: Optional[List[str]] = None,
                    where: str = "the weights") -> Tuple[List[str], Optional[str]]:
    """The class names: `names_file` when given, else the ones the checkpoint or export recorded (`recorded`).

    Returns the names and None, or the indices as names and a note saying so. A count that differs from
    `num_classes` raises.
    """
    if names_file:
        names, source = read_class_names(names_file), f"--class-names '{names_file}'"
    elif recorded:
        names, source = list(recorded), where
    else:
        return [str(i) for i in range(num_classes)], (f"note: no class names recorded in {where}; showing class "
                                                      f"indices, pass --class-names FILE (one name a line) for names")
    if len(names) != num_classes:
        raise UserError(f"{source} lists {len(names)} class names but the model has {num_classes} classes; "
                        f"give the class list the model was trained with (the run's classes.txt)")
    return names, None


# ----------------------------------------------------------------------------------------------------------
# Outputs: probabilities and top-k


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probs: np.ndarray, k: int, names: Sequence[str]) -> List[dict]:
    """The `k` most probable classes (all of them when there are fewer), most probable first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class": names[i], "index": int(i), "prob": round(float(probs[i]), 6)} for i in order]


# ----------------------------------------------------------------------------------------------------------
# Running a network over images


@dataclass
class Predictor:
    run: Callable[[np.ndarray], np.ndarray]  # (B, 3, S, S) preprocessed float32 -> (B, num_classes) logits
    data: DataConfig  # preprocessing (mean, std, crop_pct, interpolation), max_image_pixels, on_bad_image
    image_size: int
    num_classes: int
    fixed_batch: Optional[int] = None  # the batch a fixed-batch export takes; None: any batch
    pad: bool = True  # pad the last batch to full size (graph mode then compiles one shape only)

    def batch_size(self, requested: Optional[int], num_images: int) -> int:
        if self.fixed_batch is not None:
            if requested is not None and requested != self.fixed_batch:
                raise UserError(f"--batch-size {requested}: this export takes batches of exactly "
                                f"{self.fixed_batch} (infer pads the last one); leave out --batch-size, or export "
                                f"again with --batch {requested} or, for MindIR, --batch dynamic")
            return self.fixed_batch
        return max(1, min(requested or DEFAULT_BATCH_SIZE, num_images))

    def preprocess(self, path: os.PathLike) -> np.ndarray:
        image = load_image_rgb(path, self.data.max_image_pixels)
        return preprocess_eval(image, self.data, self.image_size)

    def predict(self, paths: Sequence[Path], batch_size: Optional[int] = None,
                on_skip: Optional[Callable[[Path, str], None]] = None) -> Iterator[Tuple[Path, np.ndarray]]:
        """Yield (path, class probabilities) for each readable image, in order, `batch_size` at a time.

        An unreadable image goes to `on_skip(path, reason)` (or raises with `data.on_bad_image=error`, or
        without `on_skip`).
        """
        size = self.batch_size(batch_size, len(paths))
        batch_paths: List[Path] = []
        batch: List[np.ndarray] = []
        for path in paths:
            try:
                batch.append(self.preprocess(path))
            except UnusableImage as err:
                if self.data.on_bad_image == "error" or on_skip is None:
                    raise
                on_skip(path, err.reason)
                continue
            batch_paths.append(path)
            if len(batch) == size:
                yield from self._run(batch_paths, batch, size)
                batch_paths, batch = [], []
        if batch:
            yield from self._run(batch_paths, batch, size)

    def _run(self, paths: List[Path], arrays: List[np.ndarray], size: int) -> Iterable[Tuple[Path, np.ndarray]]:
        x = np.stack(arrays).astype(np.float32, copy=False)  # (n, 3, S, S)
        if self.pad and len(arrays) < size:
            x = np.concatenate([x, np.zeros((size - len(arrays),) + x.shape[1:], np.float32)])  # (size, 3, S, S)
        logits = np.asarray(self.run(x), np.float32)[: len(arrays)]  # padding rows dropped
        return zip(paths, softmax(logits))


def network_predictor(network, cfg: Config) -> Predictor:
    """Label with a built network (`loader.inference_network`); graph mode pads batches to one shape."""
    run = lambda x: network(ms.Tensor(x)).asnumpy()  # noqa: E731
    return Predictor(run, cfg.data, cfg.model.image_size, cfg.model.num_classes, pad=cfg.train.mode == "graph")


def exported_predictor(model_path: str, cfg: Config, sidecar: dict) -> Predictor:
    """Run an exported file: MindIR via mindspore.load + nn.GraphCell, ONNX via onnxruntime."""
    fmt = export_format(model_path)
    if sidecar["format"] != fmt:
        raise UserError(f"'{model_path}' is {fmt} but its sidecar says {sidecar['format']}; re-export the model")
    run = open_exported_runner(model_path, fmt, setup_runtime(cfg).device_target)  # ONNX on GPU: CUDA provider
    batch = None if sidecar["batch"] == "dynamic" else int(sidecar["batch"])
    return Predictor(run, cfg.data, sidecar["image_size"], sidecar["num_classes"], fixed_batch=batch,
                     pad=batch is not None)

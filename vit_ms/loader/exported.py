"""Exported files at run time: their formats, the JSON sidecar beside each, and running one without vit_ms's model.

    run = open_exported_runner("best.onnx", "onnx")     # (B, 3, S, S) float32 -> (B, num_classes) logits
    sidecar = read_sidecar("best.onnx")                 # image size, mean/std, classes, batch mode

vit_ms/inference/to_mindir_onnx.py writes these files; vit_ms.loader opens them (so prediction never depends on
the exporter).
"""
import json
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

from ..config import Config
from ..config_loader import apply_overrides, config_from_dict, load_config
from ..errors import UserError

FORMATS = {"mindir": ".mindir", "onnx": ".onnx"}
INPUT_NAME, OUTPUT_NAME = "images", "logits"
REQUIRED_SIDECAR_KEYS = ("format", "model", "num_classes", "image_size", "mean", "std", "crop_pct",
                         "interpolation", "batch")


def sidecar_path(model_path: os.PathLike) -> Path:
    """`best.onnx` -> `best.onnx.json` (so a .mindir and an .onnx of the same checkpoint do not collide)."""
    return Path(f"{model_path}.json")


def export_format(path: os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    for fmt, ext in FORMATS.items():
        if suffix == ext:
            return fmt
    raise UserError(f"--model '{path}': expected a .mindir or .onnx file written by python -m vit_ms.export")


def read_sidecar(model_path: os.PathLike) -> dict:
    """The sidecar of an exported file, checked for the keys inference needs."""
    path = sidecar_path(model_path)
    if not path.is_file():
        raise UserError(f"no sidecar '{path}' beside '{model_path}': infer.py --model needs the JSON that "
                        f"python -m vit_ms.export writes next to the file (image size, mean/std, classes); "
                        f"re-export the checkpoint with python -m vit_ms.export")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"sidecar '{path}' is not readable JSON ({err}); re-export the model") from err
    missing = [key for key in REQUIRED_SIDECAR_KEYS if key not in sidecar]
    if missing:
        raise UserError(f"sidecar '{path}' lacks {', '.join(missing)}; re-export the model with python -m "
                        f"vit_ms.export")
    return sidecar


def config_for_export(model_path: str, config_path: Optional[str] = None,
                      overrides: Sequence[str] = ()) -> Tuple[Config, dict]:
    """The config to run an exported file with, and its sidecar.

    Without `config_path` the sidecar's model and preprocessing form the config; `overrides` apply either
    way. The model name, image size and class count must be the export's.
    """
    if not Path(model_path).is_file():
        raise UserError(f"exported model '{model_path}' does not exist")
    export_format(model_path)
    sidecar = read_sidecar(model_path)
    if config_path:
        cfg = load_config(config_path, overrides)
    else:
        values = {"model": {"name": sidecar["model"], "num_classes": sidecar["num_classes"],
                            "image_size": sidecar["image_size"], "patch_size": sidecar.get("patch_size")},
                  "data": {key: sidecar[key] for key in ("mean", "std", "crop_pct", "interpolation")}}
        cfg = config_from_dict(apply_overrides(values, list(overrides)))
    fixed = {"model.name": sidecar["model"], "model.image_size": sidecar["image_size"],
             "model.num_classes": sidecar["num_classes"]}
    differ = [f"{key}={getattr(cfg.model, key.split('.')[1])!r} (export: {want!r})"
              for key, want in fixed.items() if getattr(cfg.model, key.split(".")[1]) != want]
    if differ:
        raise UserError(f"the config does not match the exported model '{model_path}': {', '.join(differ)}; "
                        f"the exported network is fixed, so leave these keys out or use the run's config")
    return cfg, sidecar


def open_exported_runner(path: os.PathLike, fmt: str, device_target: str = "CPU") -> Callable:
    """A function (B, 3, S, S) float32 array -> (B, num_classes) logits array that runs an exported file:
    MindIR through `mindspore.load` + `nn.GraphCell` (on the current device), ONNX through onnxruntime."""
    if fmt == "mindir":
        # MindSpore loads only for a MindIR file (seconds); the export command's parser reads FORMATS from here
        import mindspore as ms
        from mindspore import nn

        try:
            cell = nn.GraphCell(ms.load(str(path)))
        except (RuntimeError, ValueError) as err:
            raise UserError(f"'{path}' is not a readable MindIR file ({err}); re-export it") from err
        return lambda x: cell(ms.Tensor(x)).asnumpy()
    try:
        import onnxruntime as ort  # optional package (requirements-test.txt): only ONNX files need it
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    except ImportError as err:
        raise UserError("running an ONNX file needs onnxruntime: pip install onnxruntime") from err
    providers = ["CPUExecutionProvider"]
    if device_target == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.Fail, ort_errors.NoSuchFile) as err:
        raise UserError(f"'{path}' is not a readable ONNX file ({err}); re-export it") from err
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]

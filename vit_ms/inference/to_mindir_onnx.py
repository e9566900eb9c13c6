"""Export a trained ViT to MindIR or ONNX, prove the file reproduces the model, and describe it in a sidecar.

    python -m vit_ms.export --ckpt runs/demo/best.ckpt --format onnx --batch 8   # [--config yaml] [--set k=v]

The exported network is the inference network (eval mode: no dropout, no drop path), in float32.
  input  "images": (B, 3, S, S) float32, NCHW, RGB, already preprocessed exactly as evaluation does it
                   (`vit_ms.data.preprocess_eval`: resize the shorter side to floor(S / crop_pct), center crop
                   S x S, then (pixel - mean) / std with mean and std on the 0-255 scale);
  output "logits": (B, num_classes) float32, before softmax.
`<out>.json` beside the file holds what a deployment needs to feed it: image size, mean, std, crop_pct,
interpolation, class names, the input/output names and shapes and the batch mode (`read_sidecar`).

Batch: `--batch N` fixes the batch (callers pad the last one; `infer.py --model` does), `--batch dynamic`
accepts any batch and is MindIR only: MindSpore 2.10's ONNX exporter takes static shapes only and writes the
batch size into the Reshape/Expand constants, so relabelling the ONNX input as dynamic gives wrong shapes.

ONNX and exact GELU: MindSpore 2.10 cannot export Erf to ONNX ("Can not find key Erf in convert map"), and
its GeLU export is the tanh approximation. So for ONNX only, each exact GELU is swapped for a copy that calls
Softsign where it calls erf, and every Softsign node of the exported graph is then retyped to ONNX Erf (opset
9+): the file computes the exact GELU and the model in vit_ms/models is unchanged.
"""
import json
import math
import os
import stat
import subprocess
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ..config import Config
from ..errors import UserError
from ..fs import prove_writable, write_text_atomic
from ..loader.exported import FORMATS, INPUT_NAME, OUTPUT_NAME, open_exported_runner, sidecar_path
from ..loader.opener import open_model
from ..models.layers import GELU

ONNX_OPSET = 11  # what MindSpore 2.10 writes
PARITY_ATOL = 1e-4  # max |exported - model| logit difference accepted by the post-export check
SIDECAR_VERSION = 1
Batch = Union[int, str]  # an int, or "dynamic"


class ExportError(UserError):
    """An export cannot be made as asked, or the exported file does not reproduce the model."""


def parse_batch(text: str) -> Batch:
    if text == "dynamic":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ExportError(f"--batch must be a positive integer or 'dynamic', got '{text}'")


def check_request(fmt: str, batch: Batch, attention: str) -> None:
    """Reject what cannot be exported before anything is built."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    if fmt == "onnx" and batch == "dynamic":
        raise ExportError("--batch dynamic is not supported for ONNX: MindSpore 2.10 exports ONNX with static "
                          "shapes only (the batch size is written into the graph's Reshape constants). Export a "
                          "fixed batch, e.g. --batch 8 (infer.py --model pads the last batch), or use "
                          "--format mindir --batch dynamic")
    if fmt == "onnx" and attention == "fused":
        raise ExportError("model.attention=fused (Ascend flash attention) cannot be exported to ONNX; use "
                          "model.attention=auto, which exports the standard attention (same weights and math)")


def default_out(ckpt: os.PathLike, fmt: str) -> Path:
    return Path(ckpt).with_suffix(FORMATS[fmt])


def resolve_out(out: Optional[str], ckpt: str, fmt: str) -> Path:
    """The output path: --out with the format's suffix added when it has none; a different suffix is an error."""
    if not out:
        return default_out(ckpt, fmt)
    path = Path(out)
    if path.is_dir():
        raise ExportError(f"--out '{out}' is a folder; give the file to write, e.g. --out "
                          f"{path / Path(ckpt).with_suffix(FORMATS[fmt]).name}")
    if path.suffix.lower() == FORMATS[fmt]:
        return path.with_suffix(FORMATS[fmt])  # lower case: mindspore.load insists on '.mindir'
    if path.suffix.lower() in FORMATS.values():
        raise ExportError(f"--out '{out}' has the suffix of another format; --format {fmt} writes "
                          f"'{path.with_suffix(FORMATS[fmt])}'")
    return Path(f"{out}{FORMATS[fmt]}")


def check_out_writable(out: Path) -> None:
    """Create `out`'s folder and prove a file can be written there, before any model is built."""
    blocker = next((p for p in [out.parent, *out.parent.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ExportError(f"cannot write --out '{out}': '{blocker}' is a file, not a folder; choose an --out in a "
                          f"folder (e.g. --out runs/demo/model{out.suffix})")
    try:
        prove_writable(out.parent, f".{out.name}.write_test")
    except OSError as err:
        raise ExportError(f"cannot write --out '{out}' ({err.strerror or err}); choose a writable folder, e.g. "
                          f"--out /tmp/{out.name}") from err


# ----------------------------------------------------------------------------------------------------------
# Building and exporting the network


def _example_input(batch: Batch, image_size: int):
    if batch == "dynamic":
        return ms.Tensor(shape=[None, 3, image_size, image_size], dtype=ms.float32)
    return ms.Tensor(np.zeros((batch, 3, image_size, image_size), np.float32))


def _swap_erf_gelu(model) -> int:
    """Replace each exact (erf) GELU cell by `_softsign_gelu()`; returns how many were replaced."""
    swapped = 0
    for _, cell in model.cells_and_names():
        for name, child in list(cell.name_cells().items()):
            if isinstance(child, GELU) and not child.tanh:
                setattr(cell, name, _softsign_gelu())
                swapped += 1
    return swapped


def _softsign_gelu():
    """GELU with Softsign standing where erf belongs; export only (the ONNX file gets Erf back)."""
    class SoftsignGELU(nn.Cell):
        def construct(self, x):
            return 0.5 * x * (1.0 + ops.softsign(x * (1.0 / math.sqrt(2.0))))

    return SoftsignGELU()


def _rename_value(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def _finish_onnx(path: Path, erf_nodes: int) -> None:
    """Retype the Softsign placeholders to Erf, name the input and output, check and save the file."""
    import onnx  # optional package (requirements-test.txt): only ONNX exports need it, checked in export_network

    model = onnx.load(str(path))
    graph = model.graph
    placeholders = [node for node in graph.node if node.op_type == "Softsign"]
    if len(placeholders) != erf_nodes:
        raise ExportError(f"expected {erf_nodes} GELU placeholders in the exported ONNX graph, found "
                          f"{len(placeholders)}; the model now uses Softsign itself, so the Erf rewrite is unsafe")
    for node in placeholders:
        node.op_type = "Erf"
        node.name = node.name.replace("Softsign", "Erf")
    _rename_value(graph, graph.input[0].name, INPUT_NAME)
    _rename_value(graph, graph.output[0].name, OUTPUT_NAME)
    onnx.checker.check_model(model)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)  # MindSpore writes its exports read-only
    onnx.save(model, str(path))
    os.chmod(path, stat.S_IRUSR)


def export_network(model, fmt: str, batch: Batch, image_size: int, out: Path) -> Path:
    """Write `model` as MindIR or ONNX to `out`. Export each freshly built network once: MindSpore 2.10
    fails to export the same network object to ONNX a second time."""
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  optional package: checked before the export starts
        except ImportError as err:
            raise ExportError("ONNX export needs the onnx package: pip install onnx") from err
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    erf_nodes = _swap_erf_gelu(model) if fmt == "onnx" else 0
    try:
        ms.export(model, _example_input(batch, image_size), file_name=str(tmp), file_format=fmt.upper())
        if fmt == "onnx":
            _finish_onnx(tmp, erf_nodes)
        os.replace(tmp, out)
    except OSError as err:
        raise ExportError(f"could not write '{out}' ({err.strerror or err}); free disk space or choose another "
                          f"--out") from err
    finally:
        tmp.unlink(missing_ok=True)
    return out


# ----------------------------------------------------------------------------------------------------------
# Parity check and sidecar


def parity_inputs(batch: Batch, image_size: int) -> List[np.ndarray]:
    """Random inputs for the parity check: one batch, or batches of 1 and 3 for a dynamic export."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal((size, 3, image_size, image_size)).astype(np.float32)
            for size in ((1, 3) if batch == "dynamic" else (batch,))]


def check_parity(path: Path, fmt: str, inputs: List[np.ndarray], expected: List[np.ndarray],
                 device_target: str) -> float:
    """Run the exported file on `inputs`; returns the max |logit difference| from the model's `expected`.

    Above PARITY_ATOL the file is removed and ExportError raised.
    """
    run = open_exported_runner(path, fmt, device_target)
    worst = max(float(np.abs(run(x) - want).max()) for x, want in zip(inputs, expected))
    if not worst <= PARITY_ATOL:
        path.unlink()
        raise ExportError(f"the export does not reproduce the model: max |logit difference| {worst:.3g} > "
                          f"{PARITY_ATOL:g}, so '{path}' was removed; please report this with the config used")
    return worst


def _git_commit() -> Optional[str]:
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return None
    try:
        result = subprocess.run(["git", "-C", str(repo), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def build_sidecar(cfg: Config, patch_size: int, fmt: str, batch: Batch, out: Path, ckpt: str,
                  class_names: Optional[List[str]], parity: Optional[float]) -> dict:
    m, d = cfg.model, cfg.data
    b = "batch" if batch == "dynamic" else batch
    sidecar = {
        "sidecar_version": SIDECAR_VERSION,
        "format": fmt,
        "file": out.name,
        "model": m.name,
        "patch_size": patch_size,
        "num_classes": m.num_classes,
        "class_names": class_names,
        "image_size": m.image_size,
        "mean": list(d.mean),
        "std": list(d.std),
        "crop_pct": d.crop_pct,
        "interpolation": d.interpolation,
        "batch": batch,
        "input": {"name": INPUT_NAME, "shape": [b, 3, m.image_size, m.image_size], "dtype": "float32",
                  "layout": "NCHW", "color": "RGB",
                  "preprocessing": "resize the shorter side to floor(image_size / crop_pct) with `interpolation`, "
                                   "center crop image_size x image_size, (pixel - mean) / std on the 0-255 scale"},
        "output": {"name": OUTPUT_NAME, "shape": [b, m.num_classes], "dtype": "float32",
                   "meaning": "logits (apply softmax for probabilities)"},
        "checkpoint": str(ckpt),
        "parity_max_abs_diff": parity,
        "mindspore_version": ms.__version__,
        "vit_ms_commit": _git_commit(),
    }
    if fmt == "onnx":
        sidecar["onnx_opset"] = ONNX_OPSET
    return sidecar


def export(ckpt: str, fmt: str, batch: Batch = 1, out: Optional[str] = None, check: bool = True, *,
           config_path: Optional[str] = None, overrides: Sequence[str] = (),
           weights: Optional[str] = None, cache_dir: Optional[os.PathLike] = None) -> Tuple[Path, dict]:
    """Export checkpoint `ckpt` as `fmt`, check parity (unless `check` is False), write the sidecar.

    The model is rebuilt from what the checkpoint records (or `config_path`), `overrides` on top; `weights`
    picks a checkpoint's "raw" or "ema" weights (None: the ones it records as best); published weights are
    downloaded into `cache_dir`.
    Returns the exported file's path and the sidecar's contents.
    """
    check_request(fmt, batch, "standard")
    out_path = resolve_out(out, ckpt, fmt)
    check_out_writable(out_path)
    loaded = open_model(ckpt, cache_dir, config_path=config_path, overrides=overrides, purpose="export",
                        check=lambda cfg: check_request(fmt, batch, cfg.model.attention), weights=weights)
    cfg, plan, model, class_names = loaded.cfg, loaded.plan, loaded.network, loaded.class_names
    if class_names is not None and len(class_names) != cfg.model.num_classes:
        raise ExportError(f"the checkpoint records {len(class_names)} class names but model.num_classes="
                          f"{cfg.model.num_classes}; leave model.num_classes as trained")
    inputs = parity_inputs(batch, plan.arch.image_size) if check else []
    expected = [model(ms.Tensor(x)).asnumpy() for x in inputs]  # before the ONNX export swaps the GELUs
    export_network(model, fmt, batch, plan.arch.image_size, out_path)
    parity = check_parity(out_path, fmt, inputs, expected, plan.device_target) if check else None
    sidecar = build_sidecar(cfg, plan.arch.patch_size, fmt, batch, out_path, ckpt, class_names, parity)
    write_text_atomic(sidecar_path(out_path), json.dumps(sidecar, indent=2) + "\n")
    return out_path, sidecar

"""The one model a server holds: loaded once through vit_ms.inference, compiled for its batch sizes at start.

    model = load_served_model("runs/demo/best.ckpt", max_batch=16)   # or a published name, or best.onnx
    x = model.preprocess(image)                 # decoded (H, W, 3) uint8 (vit_ms.serve.pixels) -> (3, S, S) float32
    probs = model.probabilities(batch)          # (B, S...) -> (B, C); B must be one of model.batch_sizes
    overlay_png, probs = model.attention(x)     # checkpoints and published weights only (model.attention_note)

Every MindSpore call goes through this object from one thread (the server's model thread). `batch_sizes` are the
shapes the graph is compiled for at start (`warm_up`): powers of two up to `max_batch`, and `max_batch` itself;
the batcher pads each batch up to the next one, so graph mode never compiles while serving. An export with a
fixed batch takes exactly that batch.
"""
import base64
import io
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from matplotlib import colormaps
from mindspore import nn
from PIL import Image

from ..config import Config, config_to_dict
from ..data.transforms import preprocess_eval
from ..inference import predict
from ..inference.attention_maps import displayable, maps_from_probabilities
from ..inference.predict import Predictor, class_names_for, softmax
from ..loader.exported import export_format
from ..loader.opener import open_model

log = logging.getLogger("vit_ms")

NO_MINDCV_ATTENTION = "a mindcv model is not vit_ms's ViT: it has no attention maps to show"
NO_ATTENTION = ("an exported {fmt} graph computes only the logits, not the attention probabilities; serve the "
                "checkpoint it was exported from (--ckpt runs/<name>/best.ckpt) to see attention maps")


def batch_sizes(max_batch: int, fixed: Optional[int] = None) -> List[int]:
    """The batch shapes to compile: powers of two below `max_batch`, then `max_batch`; a fixed export: its batch."""
    if fixed is not None:
        return [fixed]
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return sizes + [max_batch]


@dataclass
class ServedModel:
    predictor: Predictor  # preprocessing settings and the (B, 3, S, S) -> (B, C) logits function
    class_names: List[str]
    cfg: Config
    info: dict  # what GET /v1/model answers (without the server's limits)
    batch_sizes: List[int]
    network: object = None  # our VisionTransformer (attention maps); None for an exported file
    attention_note: Optional[str] = None  # why there are no attention maps, when there are none
    _with_attention: object = field(default=None, repr=False)  # WithAttention(network), built on first use

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    @property
    def eval_resize(self) -> int:
        """The shorter side evaluation resizes to before its center crop: floor(image_size / crop_pct)."""
        return int(self.predictor.image_size / self.predictor.data.crop_pct)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """A decoded (H, W, 3) uint8 upload -> (3, S, S) float32, as evaluation preprocesses files."""
        return preprocess_eval(image, self.predictor.data, self.predictor.image_size)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 with B in `batch_sizes` -> (B, num_classes) softmax probabilities."""
        if x.shape[0] not in self.batch_sizes:
            raise ValueError(f"batch of {x.shape[0]} is not one of the compiled sizes {self.batch_sizes}")
        return softmax(np.asarray(self.predictor.run(x), np.float32))

    def attention(self, x: np.ndarray) -> Tuple[bytes, np.ndarray]:
        """One image (3, S, S) -> a PNG of the crop the model saw with the attention rollout over it, and its
        (num_classes,) probabilities. Only when `network` is there (not for an exported file)."""
        if self.network is None:
            raise ValueError(self.attention_note)
        if self._with_attention is None:
            self._with_attention = WithAttention(self.network)
        logits, probs = self._with_attention(ms.Tensor(x[None]))  # (1, C), depth x (1, H, N+1, N+1)
        rollout, _ = maps_from_probabilities([p.asnumpy() for p in probs], x.shape[-1],
                                             self.network.arch.patch_size)  # (1, S, S)
        image = displayable(x, self.cfg.data.mean, self.cfg.data.std)  # (S, S, 3) uint8
        return overlay_png(image, rollout[0]), softmax(logits.asnumpy())[0]

    def warm_up(self) -> float:
        """Run every batch size once (and the attention path at batch 1): graph mode compiles here, not while
        serving. Returns the seconds it took."""
        start = time.perf_counter()
        shape = (3, self.predictor.image_size, self.predictor.image_size)
        for size in self.batch_sizes:
            self.probabilities(np.zeros((size,) + shape, np.float32))
        if self.network is not None:
            self.attention(np.zeros(shape, np.float32))
        return time.perf_counter() - start


class WithAttention(nn.Cell):
    """(B, 3, S, S) -> (logits, depth x attention probabilities) from one forward call: in graph mode it compiles
    into one graph, where calling `attention_probabilities` from Python would run each block as its own graph
    (about 270 ms against 10 ms an image for the demo model on a 2-core CPU)."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit

    def construct(self, x):
        return self.vit(x), self.vit.attention_probabilities(x)


def overlay_png(image: np.ndarray, weights: np.ndarray, alpha: float = 0.5) -> bytes:
    """(S, S, 3) uint8 image and (S, S) weights in [0, 1] -> PNG bytes of the weights in the 'jet' colours over the
    image (as the attention-map figures draw them)."""
    colours = colormaps["jet"](weights)[..., :3] * 255.0  # (S, S, 3)
    blended = np.clip((1 - alpha) * image + alpha * colours, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(blended).save(out, format="PNG")
    return out.getvalue()


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def load_served_model(spec: str, max_batch: int = 16, config_path: Optional[str] = None,
                      overrides: Sequence[str] = (), weights: Optional[str] = None,
                      names_file: Optional[str] = None, cache_dir: Optional[Path] = None) -> ServedModel:
    """Our checkpoint, a published weights name or file, a mindcv model, or an exported .mindir/.onnx with its
    sidecar (vit_ms.loader.opener.open_model, downloads into `cache_dir`), ready to serve but not yet warmed up."""
    loaded = open_model(spec, cache_dir, config_path=config_path, overrides=overrides, weights=weights,
                        exported=True)
    cfg, sidecar = loaded.cfg, loaded.sidecar
    if sidecar is not None:
        predictor = predict.exported_predictor(spec, cfg, sidecar)
        fmt = export_format(spec)
        names, note = class_names_for(cfg.model.num_classes, names_file, loaded.class_names, "the export's sidecar")
        fixed = predictor.fixed_batch
        source = {"kind": "exported", "spec": spec, "format": fmt, "checkpoint": sidecar.get("checkpoint")}
        architecture = {"name": sidecar["model"], "patch_size": sidecar.get("patch_size"),
                        "image_size": sidecar["image_size"], "num_classes": sidecar["num_classes"]}
        network, which, no_maps = None, None, NO_ATTENTION.format(fmt=fmt.upper() if fmt == "onnx" else "MindIR")
    else:
        network = loaded.network
        predictor = predict.network_predictor(network, cfg)
        names, note = class_names_for(cfg.model.num_classes, names_file, loaded.class_names, f"'{spec}'")
        fixed, no_maps = None, None
        source, which = {"kind": loaded.source.kind, "spec": spec}, loaded.weights or "raw"
        architecture = asdict(loaded.plan.arch)
        if loaded.source.kind == "mindcv":  # not our ViT: no attention probabilities, its own architecture
            network, no_maps = None, NO_MINDCV_ATTENTION
            architecture = {"name": spec, "image_size": predictor.image_size, "num_classes": predictor.num_classes}
    if note:
        log.warning(note)
    info = {"architecture": architecture, "classes": names, "source": source, "weights": which,
            "image_size": predictor.image_size, "num_classes": predictor.num_classes,
            "attention": network is not None, "attention_note": no_maps, "config": config_to_dict(cfg)}
    return ServedModel(predictor, names, cfg, info, batch_sizes(max_batch, fixed), network, no_maps)

"""Published ViT weights: a table of where they live and a checked download cache.

    path = resolve_pretrained("vit_b16.augreg_in21k_ft_in1k", cache_dir)   # a table name, a URL or a local file

Downloads go to `cache_dir` (default ~/.cache/vit_ms; entry scripts may read VIT_MS_CACHE once and pass it
down: see `cache_dir_from_env`), written to a temp file and renamed, checked against sha256 when it is known.
Without network the error says which URL to fetch and exactly where to put the file.
"""
import hashlib
import logging
import os
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union


from ..config import IMAGENET_MEAN, IMAGENET_STD
from ..errors import CheckpointError, UserError, suggest
from .sources import SOURCE_OVERRIDES

log = logging.getLogger("vit_ms")
PathLike = Union[str, os.PathLike]

DEFAULT_CACHE_DIR = Path("~/.cache/vit_ms")
CACHE_ENV = "VIT_MS_CACHE"
INCEPTION_MEAN = (127.5, 127.5, 127.5)  # 0.5 / 0.5 normalisation on the 0-255 scale of DataConfig
INCEPTION_STD = (127.5, 127.5, 127.5)


@dataclass(frozen=True)
class PretrainedWeights:
    """One published set of weights and how to evaluate it (mean/std on the 0-255 scale of `data.*`)."""
    url: str
    source_format: str  # a key of vit_ms.convert.SOURCE_OVERRIDES
    model: str  # our model.name
    num_classes: int
    image_size: int
    sha256: Optional[str] = None  # None: not published, the download is not checked
    mean: Tuple[float, ...] = INCEPTION_MEAN
    std: Tuple[float, ...] = INCEPTION_STD
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    model_overrides: Mapping[str, object] = field(default_factory=dict)  # model.* beyond SOURCE_OVERRIDES

    def config_overrides(self) -> List[str]:
        """`section.key=value` overrides (for --set / apply_overrides) that evaluate these weights as published."""
        model = {"name": self.model, "num_classes": self.num_classes, "image_size": self.image_size,
                 **SOURCE_OVERRIDES[self.source_format], **self.model_overrides}
        data = {"mean": list(self.mean), "std": list(self.std), "crop_pct": self.crop_pct,
                "interpolation": self.interpolation}
        return [format_override(f"model.{k}", v) for k, v in model.items()] + \
            [format_override(f"data.{k}", v) for k, v in data.items()]


def format_override(key: str, value) -> str:
    """`key=value` that vit_ms.config reads back as the same value (YAML: 1e-07 would be a string)."""
    def text(v) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(text(x) for x in v) + "]"
        if isinstance(v, float):
            s = repr(v)
            return s.replace("e", ".0e", 1) if "e" in s and "." not in s else s
        return str(v)

    return f"{key}={text(value)}"


_HF = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"
_GCS = "https://storage.googleapis.com/vit_models/"
_AUGREG_FT = "--imagenet2012-steps_20k-lr_{}-res_{}.npz"


def _timm(timm_name: str, model: str, image_size: int = 224, **kw) -> PretrainedWeights:
    kw.setdefault("crop_pct", 0.9 if image_size == 224 else 1.0)
    return PretrainedWeights(_HF.format(timm_name), "timm", model, kw.pop("num_classes", 1000), image_size, **kw)


def _jax(path: str, model: str, image_size: int = 224, **kw) -> PretrainedWeights:
    kw.setdefault("crop_pct", 0.9 if image_size == 224 else 1.0)
    return PretrainedWeights(_GCS + path, "npz", model, kw.pop("num_classes", 1000), image_size, **kw)


def _deit(timm_name: str, model: str) -> PretrainedWeights:
    return PretrainedWeights(_HF.format(timm_name), "timm", model, 1000, 224, mean=tuple(IMAGENET_MEAN),
                             std=tuple(IMAGENET_STD), crop_pct=0.875)


def _mindspore(url: str, source_format: str, model: str, interpolation: str) -> PretrainedWeights:
    return PretrainedWeights(url, source_format, model, 1000, 224, mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD),
                             crop_pct=0.875, interpolation=interpolation)


_B16 = "augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0"
_S16 = "augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0"
_TI16 = "augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
_B32 = "augreg/B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0"
_L16 = "augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1"

# name -> weights. "<model>[_<res>].<tag>": timm's tags; "_jax" marks Google's original .npz of the same run.
PRETRAINED: Dict[str, PretrainedWeights] = {
    # timm / Hugging Face hub (safetensors); AugReg: "How to train your ViT?" (Steiner et al., 2021)
    "vit_ti16.augreg_in21k_ft_in1k": _timm("vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_ti16"),
    "vit_s16.augreg_in21k_ft_in1k": _timm("vit_small_patch16_224.augreg_in21k_ft_in1k", "vit_s16"),
    "vit_s16.augreg_in1k": _timm("vit_small_patch16_224.augreg_in1k", "vit_s16"),
    "vit_b16.augreg2_in21k_ft_in1k": _timm("vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit_b16"),
    "vit_b16.augreg_in21k_ft_in1k": _timm("vit_base_patch16_224.augreg_in21k_ft_in1k", "vit_b16"),
    "vit_b16.augreg_in1k": _timm("vit_base_patch16_224.augreg_in1k", "vit_b16"),
    "vit_b16.augreg_in21k": _timm("vit_base_patch16_224.augreg_in21k", "vit_b16", num_classes=21843),
    "vit_b16_384.augreg_in21k_ft_in1k": _timm("vit_base_patch16_384.augreg_in21k_ft_in1k", "vit_b16", 384),
    "vit_b32.augreg_in21k_ft_in1k": _timm("vit_base_patch32_224.augreg_in21k_ft_in1k", "vit_b32"),
    "vit_l16.augreg_in21k_ft_in1k": _timm("vit_large_patch16_224.augreg_in21k_ft_in1k", "vit_l16"),
    # DeiT (Touvron et al., 2021), same architecture, ImageNet normalisation
    "vit_ti16.deit_in1k": _deit("deit_tiny_patch16_224.fb_in1k", "vit_ti16"),
    "vit_s16.deit_in1k": _deit("deit_small_patch16_224.fb_in1k", "vit_s16"),
    "vit_b16.deit_in1k": _deit("deit_base_patch16_224.fb_in1k", "vit_b16"),
    # Google's original releases (google-research/vision_transformer, Flax .npz)
    "vit_ti16.augreg_in21k_ft_in1k_jax": _jax(_TI16 + _AUGREG_FT.format("0.03", 224), "vit_ti16"),
    "vit_s16.augreg_in21k_ft_in1k_jax": _jax(_S16 + _AUGREG_FT.format("0.03", 224), "vit_s16"),
    "vit_b16.augreg_in21k_ft_in1k_jax": _jax(_B16 + _AUGREG_FT.format("0.01", 224), "vit_b16"),
    "vit_b16_384.augreg_in21k_ft_in1k_jax": _jax(_B16 + _AUGREG_FT.format("0.01", 384), "vit_b16", 384),
    "vit_b32.augreg_in21k_ft_in1k_jax": _jax(_B32 + _AUGREG_FT.format("0.03", 224), "vit_b32"),
    "vit_l16.augreg_in21k_ft_in1k_jax": _jax(_L16 + _AUGREG_FT.format("0.01", 224), "vit_l16"),
    "vit_b16.augreg_in21k_jax": _jax(_B16 + ".npz", "vit_b16", num_classes=21843),
    "vit_b16_384.orig_in21k_ft_in1k_jax": _jax("imagenet21k+imagenet2012/ViT-B_16.npz", "vit_b16", 384),
    # MindSpore: mindcv 0.3 model zoo and the MindSpore ViT tutorial (mindvision)
    "vit_b32.mindcv_in1k": _mindspore("https://download.mindspore.cn/toolkits/mindcv/vit/vit_b_32_224-f50866e8.ckpt",
                                      "mindcv", "vit_b32", "bicubic"),
    "vit_l16.mindcv_in1k": _mindspore("https://download.mindspore.cn/toolkits/mindcv/vit/vit_l_16_224-97d0fdbc.ckpt",
                                      "mindcv", "vit_l16", "bicubic"),
    "vit_l32.mindcv_in1k": _mindspore("https://download.mindspore.cn/toolkits/mindcv/vit/vit_l_32_224-b80441df.ckpt",
                                      "mindcv", "vit_l32", "bicubic"),
    "vit_b16.mindspore_tutorial": _mindspore("https://download.mindspore.cn/vision/classification/vit_b_16_224.ckpt",
                                             "tutorial", "vit_b16", "bilinear"),
}


def cache_dir_from_env(environ: Mapping[str, str]) -> Path:
    """The cache folder an entry script should pass down: $VIT_MS_CACHE, else ~/.cache/vit_ms (read once)."""
    return Path(environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


# ----------------------------------------------------------------------------------------------------------
# Resolving a spec to a local file.


def resolve_pretrained(spec: str, cache_dir: Optional[PathLike] = None, *, sha256: str = "",
                       progress: bool = True) -> Path:
    """A local file for `spec`: a path (returned as is), a URL or a PRETRAINED name (downloaded into the cache).

    `sha256` (hex) is checked for URLs; a table entry's own sha256 is used when it has one.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR.expanduser()
    if spec in PRETRAINED:
        entry = PRETRAINED[spec]
        expected = (entry.sha256 or sha256).lower()
        return _cached(entry.url, cache / f"{spec}{_suffix(entry.url)}", expected, progress)
    if urllib.parse.urlparse(spec).scheme in ("http", "https", "file"):
        name = Path(urllib.parse.urlparse(spec).path).name or "weights"
        tag = hashlib.sha256(spec.encode()).hexdigest()[:10]  # hub URLs all end in model.safetensors
        return _cached(spec, cache / f"{Path(name).stem}-{tag}{Path(name).suffix}", sha256.lower(), progress)
    path = Path(spec).expanduser()
    if path.is_file():
        if sha256:
            _verify(path, sha256.lower(), source=str(path), delete=False)
        return path
    raise UserError(f"pretrained weights '{spec}' are not a file, a URL or a known name{suggest(spec, PRETRAINED)}; "
                    f"known names: {', '.join(PRETRAINED)}")


def _suffix(url: str) -> str:
    return Path(urllib.parse.urlparse(url).path).suffix


def _cached(url: str, target: Path, sha256: str, progress: bool) -> Path:
    if target.is_file():
        if sha256:
            _verify(target, sha256, source=f"cached file '{target}'", delete=False)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.download")  # per process: ranks may fetch at once
    try:
        _fetch(url, tmp, progress)
    except (OSError, RuntimeError) as err:  # `download` wraps every failure in RuntimeError
        for leftover in (tmp, tmp.with_name(tmp.name + ".part")):
            leftover.unlink(missing_ok=True)
        raise UserError(f"could not download {url} ({_first_line(err)}). Without network: download that URL on "
                        f"another machine and place the file at exactly {target} (or pass the file's local path "
                        f"as model.pretrained / --src)") from err
    if sha256:
        _verify(tmp, sha256, source=url, delete=True)
    tmp.replace(target)
    return target


def _fetch(url: str, dest: Path, progress: bool) -> None:
    if url.startswith("file:"):
        shutil.copyfile(urllib.request.url2pathname(urllib.parse.urlparse(url).path), dest)
        return
    from download import download  # its HTTP stack takes most of a second to load: only when fetching

    download(url, str(dest), progressbar=progress, replace=True, timeout=30.0, verbose=progress)


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str, source: str, delete: bool) -> None:
    got = file_sha256(path)
    if got == expected:
        return
    if delete:
        path.unlink(missing_ok=True)
        raise CheckpointError(f"sha256 mismatch for {source}: expected {expected}, got {got}; the download was "
                              f"deleted. Check model.pretrained_sha256 / --sha256, or try again")
    raise CheckpointError(f"sha256 mismatch for {source}: expected {expected}, got {got}; delete the file to "
                          f"download it again, or correct model.pretrained_sha256 / --sha256")

"""pip install: the package built from this checkout (pyproject.toml + setup.py), installed into a fresh folder
and used from outside the repository; its dependencies are requirements.txt's."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.py", "README.md", "requirements.txt", "vit_ms", "configs")

USE = """
import json, sys
import numpy as np
import vit_ms
from vit_ms.config_loader import CONFIG_DIR, load_config
from vit_ms.models import create_model
import mindspore as ms
cfg = load_config("deit_b16_distilled.yaml")                 # a bare name: the packaged configs
model = create_model("vit_ti16", num_classes=3, image_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                     distilled=True)
model.set_train(False)
out = model(ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)))
print(json.dumps({"package": vit_ms.__file__, "configs": str(CONFIG_DIR), "teacher": cfg.distill.teacher,
                  "base_lr": cfg.optim.lr, "shape": list(out.shape)}))
"""


def requirement_lines(text: str):
    return [re.sub(r"\s+#.*", "", line).strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith(("#", "-r"))]


def test_package_dependencies_are_requirements_txt():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == requirement_lines((ROOT / "requirements.txt").read_text())


@pytest.mark.slow
def test_installed_package_works_from_any_folder(tmp_path):
    src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    for name in SOURCES:  # a copy: building in place would leave build/ and *.egg-info in the checkout
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy(path, src / name)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                              "--no-index", "--quiet", "--target", str(site), str(src)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert sorted(p.name for p in (site / "vit_ms" / "configs").glob("*.yaml")) == \
        sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", USE], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["package"] == str(site / "vit_ms" / "__init__.py") and got["configs"] == str(site / "vit_ms" / "configs")
    assert got["teacher"] == "mindcv:regnet_y_16gf" and got["base_lr"] == 5e-4 and got["shape"] == [1, 3]
    cli = subprocess.run([sys.executable, "-m", "vit_ms.convert", "--to", "timm", "--help"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "model.safetensors" in cli.stdout

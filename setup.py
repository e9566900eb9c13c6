"""The one thing pyproject.toml cannot say: configs/ stays at the top of the checkout (python train.py --config
configs/vit_b16.yaml) and is installed as the package data vit_ms/configs, where vit_ms.config_loader finds it; the
symbol lists of the stand-in CANN libraries (vit_ms/tools/cann_symbols) go with the package too."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["vit_ms", "vit_ms.*"]) + ["vit_ms.configs"],
      package_dir={"vit_ms.configs": "configs"},
      package_data={"vit_ms.configs": ["*.yaml"], "vit_ms.tools": ["cann_symbols/*.txt"]})

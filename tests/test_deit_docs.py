"""docs/distillation.md and docs/weights-out.md: every --set override, YAML block, module, flag and link is real."""
import re
from pathlib import Path

import pytest
import yaml

from vit_ms.config import apply_overrides, config_from_dict
from vit_ms.convert import build_timm_parser as to_timm_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / "distillation.md", ROOT / "docs" / "weights-out.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_overrides_yaml_modules_and_links_exist(page):
    text = page.read_text(encoding="utf-8")
    sets = re.findall(r"--set (\S+=\S+)", text)
    assert sets or page.name == "weights-out.md"
    config_from_dict(apply_overrides({"distill": {}}, [s for s in sets if not s.startswith("data.root")]))
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        config_from_dict(yaml.safe_load(block))
    for module in set(re.findall(r"python -m (vit_ms(?:\.\w+)+)", text)):
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
    for link in re.findall(r"\]\(([^)#]+)\)", text):
        assert (page.parent / link).exists(), link
    for key in set(re.findall(r"`((?:model|distill|train|amp)\.\w+)", text)) - {"model.safetensors"}:  # a file
        section, name = key.split(".")
        assert hasattr(getattr(config_from_dict({}), section), name), key


def test_the_to_timm_flags_shown_exist():
    text = PAGES[1].read_text(encoding="utf-8")
    options = {o for a in to_timm_parser()._actions for o in a.option_strings}
    for flag in re.findall(r"\| `(--[a-z-]+)", text):
        assert flag in options, flag

"""The documentation cannot drift: every link, config key, module, flag and config file it shows is checked.

The first tests run the checkers of docs_check.py over the repository's Markdown and text files; the last ones
feed the checkers small broken pages, so a checker that stopped finding anything would fail here.
"""
import re

import pytest

import docs_check as dc

MARKDOWN = [p for p in dc.repository_files() if p.endswith(".md")]
# The checker's tests hold outside paths as bad examples.
PATHS_EXEMPT = {"tests/test_docs.py"}


def read(path: str) -> str:
    return (dc.ROOT / path).read_text(encoding="utf-8")


def report(problems) -> str:
    return "\n".join(problems)


def test_the_docs_exist_and_the_readme_is_a_front_door():
    assert "README.md" in MARKDOWN and "configs/README.md" in MARKDOWN
    assert len([p for p in MARKDOWN if p.startswith("docs/")]) >= 5
    lines = read("README.md").count("\n")
    assert lines <= 250, f"README.md has {lines} lines; keep it a front door (at most 250) and move the rest to docs/"


@pytest.mark.parametrize("check", [
    dc.check_links,        # links and images resolve
    dc.check_commands,     # commands name real modules, scripts, flags and settings
    dc.check_flag_tables,  # the flags a table lists are the flags of the command above it
    dc.check_config_keys,  # config keys and YAML snippets exist and validate
    dc.check_code_refs,    # code paths and Python names exist
], ids=lambda check: check.__name__)
def test_the_markdown_passes(check):
    problems = [p for path in MARKDOWN for p in check(read(path), path)]
    assert not problems, report(problems)


@pytest.mark.parametrize("path", sorted(p.name for p in (dc.ROOT / "configs").glob("*.yaml")))
def test_every_config_loads_and_validates(path):
    assert dc.validate_settings(f"configs/{path}", []) is None, dc.validate_settings(f"configs/{path}", [])


def test_every_entry_point_exposes_its_parser():
    """So the docs' flags can be checked: every `python -m vit_ms...` module and entry script builds its parser."""
    runnable = [p for p in dc.repository_files() if p.startswith("vit_ms/") and p.endswith(".py")
                and (p.endswith("/__main__.py") or re.search(r"__name__ == ['\"]__main__['\"]", read(p)))]
    modules = [p[:-3].replace("/", ".").removesuffix(".__main__") for p in runnable]
    assert "vit_ms.convert" in modules
    missing = [why for entry in modules + list(dc.ENTRY_SCRIPTS) for parser, why in [dc.entry_parser(entry)]
               if parser is None]
    assert not missing, report(missing)


def test_no_file_names_a_path_outside_the_repository():
    problems = []
    for path in dc.repository_files():
        text = None if path in PATHS_EXEMPT else dc.text_of(path)
        if text is not None:
            problems.extend(dc.check_paths(text, path))
    assert not problems, report(problems)


# ------------------------------------------------------------------------------------------------------------
# The checkers themselves, on pages that are wrong on purpose.

GOOD = """# Title

## A section

See [training](docs/training.md#resuming), [here](#a-section), ![curves](docs/demo_curves.png) and
[the paper](https://arxiv.org/abs/2010.11929). `optim.name: sgd`, `model.gelu=tanh model.norm_eps=1.0e-07`,
`train.ema_decay`, `vit_ms/config.py`, `vit_ms.config_loader.load_config`, `train.py`, `amp.level: auto | O0 | O2`,
`train.mode: graph / pynative`, `loss.label_smoothing=0.1 optim.lr=1e-3`.

```bash
python train.py --config vit_b16.yaml --set train.epochs=5 --set data.root=/data/x   # a comment
python -m vit_ms.convert --src w.safetensors --model vit_b16 --out w.ckpt
DRY_RUN=1 bash scripts/run_distribute_train.sh 8 configs/vit_b16.yaml --set optim.lr=1e-3 --resume auto
python -m pytest -q tests
```

```yaml
base: vit_b16.yaml
train:
  epochs: 10
```
"""


def test_a_correct_page_has_no_problems():
    assert dc.check_links(GOOD, "README.md") == []
    assert dc.check_commands(GOOD, "README.md") == []
    assert dc.check_config_keys(GOOD, "README.md") == []
    assert dc.check_code_refs(GOOD, "README.md") == []
    assert dc.check_paths(GOOD, "README.md") == []


def test_a_broken_link_a_missing_image_and_a_missing_anchor_are_found():
    page = "# T\n\nintro\n\nsee [x](docs/nowhere.md) and\n![y](docs/missing.png), [z](docs/training.md#no-such)\n" \
           "and [w](#t), [v](#nothing), [u](../outside.md)\n\n```\n[not a link](nowhere.md)\n```\n"
    problems = dc.check_links(page, "README.md")
    assert any(p.startswith("README.md:5:") and "docs/nowhere.md" in p for p in problems), problems
    assert any(p.startswith("README.md:6:") and "docs/missing.png" in p for p in problems), problems
    assert any(p.startswith("README.md:6:") and "#no-such" in p for p in problems), problems
    assert any(p.startswith("README.md:7:") and "#nothing" in p for p in problems), problems
    assert any(p.startswith("README.md:7:") and "leaves the repository" in p for p in problems), problems
    assert len(problems) == 5, problems  # '#t' resolves; the link inside the code block is not a link


def test_an_unknown_key_and_a_bad_value_are_found_in_commands_spans_and_yaml():
    page = ("text\n\n```bash\npython train.py --config vit_b16.yaml --set train.epoch=5\n"
            "python eval.py --ckpt x.ckpt --set optim.lr=-1\n```\n\n"
            "Set `train.epoch` or `optim.name: adam-x` or `--set model.image_size=225`.\n"
            "Or `train.mode: graph | eager` or `model.norm_eps=1e-6 model.gelu=tanh|exact`.\n\n"
            "```yaml\ntrain:\n  epoch: 3\n```\n")
    commands = dc.check_commands(page, "docs/x.md")
    assert any(p.startswith("docs/x.md:4:") and "train.epoch" in p for p in commands), commands
    assert any(p.startswith("docs/x.md:5:") and "optim.lr" in p for p in commands), commands
    assert any(p.startswith("docs/x.md:8:") and "model.image_size" in p for p in commands), commands
    keys = dc.check_config_keys(page, "docs/x.md")
    assert any(p.startswith("docs/x.md:8:") and "'train.epoch'" in p for p in keys), keys
    assert any(p.startswith("docs/x.md:8:") and "optim.name" in p for p in keys), keys
    assert any(p.startswith("docs/x.md:9:") and "'eager'" in p for p in keys), keys  # one bad alternative
    assert any(p.startswith("docs/x.md:9:") and "model.gelu" in p for p in keys), keys
    assert any(p.startswith("docs/x.md:12:") and "train.epoch" in p for p in keys), keys
    assert len(keys) == 5, keys


def test_an_unknown_flag_a_missing_module_script_or_config_are_found():
    page = ("```bash\npython infer.py --ckpt a.ckpt --top-k 3 photos/\n"
            "python -m vit_ms.no_such_tool --x 1\n"
            "python -m vit_ms.export --ckpt a.ckpt --format onnx \\\n    --batchsize 8\n"
            "python train.py --config no_such_recipe.yaml\n"
            "bash scripts/no_such_launcher.sh 8 configs/vit_b16.yaml\n"
            "bash scripts/run_distribute_train.sh 8 configs/vit_b16.yaml --epochs 3\n```\n\n"
            "Or `python -m vit_ms.convert --form timm`.\n")
    problems = dc.check_commands(page, "docs/x.md")
    expected = [(2, "--top-k"), (3, "vit_ms.no_such_tool"), (4, "--batchsize"), (6, "no_such_recipe.yaml"),
                (7, "no_such_launcher.sh"), (8, "--epochs"), (11, "--form")]
    for line, item in expected:
        assert any(p.startswith(f"docs/x.md:{line}:") and item in p for p in problems), (line, item, problems)
    assert len(problems) == len(expected), problems


def test_a_flag_table_row_the_command_above_does_not_have_is_found():
    page = ("```bash\npython infer.py --ckpt a.ckpt photos/\n```\n\n| flag | meaning |\n|---|---|\n"
            "| `--topk K` | shown |\n| `--top-k K` | misspelt |\n| `PATH` | not a flag |\n\n"
            "```bash\npython -m vit_ms.export --ckpt a.ckpt --format onnx\n```\n\n| `--format` | header |\n"
            "|---|---|\n| `--batch N` | exported batch |\n| `--topk K` | infer's, not export's |\n")
    problems = dc.check_flag_tables(page, "docs/x.md")
    assert [p.split(":")[1] for p in problems] == ["8", "18"], problems
    assert "--top-k" in problems[0] and "infer.py" in problems[0] and "vit_ms.export" in problems[1], problems
    assert "follows no command" in dc.check_flag_tables("| a | b |\n|---|---|\n| `--x` | y |\n", "x.md")[0]


def test_a_missing_path_or_python_name_is_found():
    page = "See `vit_ms/no_such.py`, `vit_ms.weights.hub.NO_SUCH` and `vit_ms.no_such_module`.\n"
    problems = dc.check_code_refs(page, "docs/x.md")
    assert len(problems) == 3 and all(p.startswith("docs/x.md:1:") for p in problems), problems


def test_outside_paths_are_found():
    text = ("ok line\nsee ../docs/training.md\nsee ../../notes/X.md\nas /home/someone/vit says\n"
            "python train.py --config ../configs/demo.yaml\n")
    problems = dc.check_paths(text, "docs/x.md")  # ../docs/ and ../configs/ stay inside the repository
    assert [p.split(":")[1] for p in problems] == ["3", "4"], problems


def test_a_marked_code_block_is_not_checked():
    page = f"{dc.SKIP_MARK}\n```bash\npython train.py --set train.epoch=5\n```\n"
    assert dc.check_commands(page, "docs/x.md") == []
    assert dc.check_commands(page.replace(dc.SKIP_MARK, "text"), "docs/x.md") != []


def test_a_package_entry_is_read_not_run(tmp_path, monkeypatch):
    """`python -m pkg` runs pkg/__main__.py, often without a __name__ guard: its parser is found without running it."""
    pkg = tmp_path / "docs_check_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("from .cli import main\nraise SystemExit(main())\n")
    (pkg / "cli.py").write_text("import argparse\n\n\ndef build_parser():\n    parser = argparse.ArgumentParser()\n"
                                "    parser.add_argument('--port')\n    return parser\n\n\ndef main(argv=None):\n"
                                "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser, why = dc.entry_parser("docs_check_pkg")
    assert parser is not None and "--port" in parser._option_string_actions, why
    assert dc._runnable("docs_check_pkg") is True and dc._runnable("docs_check_pkg.nothing") is None

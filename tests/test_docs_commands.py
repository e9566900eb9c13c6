"""Every ```bash block of the README and docs/ runs as written, on CPU, in page order, in one scratch folder.

A block that cannot run here says why on the line before it, and is skipped with that reason:

    <!-- not run: needs ImageNet under /data/imagenet -->

A block that runs with smaller sizes says which, on the line before it; they are added to each `python train.py`
command of the block (so the demo trains one epoch here, 30 on the page):

    <!-- run with: --set train.epochs=1 -->

The scratch folder holds links to the repository's scripts, configs and package, so `runs/` and `data/` are
written there; blocks run in order (README.md, then docs/ by name), and later blocks use what earlier ones wrote
(runs/demo/best.ckpt). `python` is this interpreter.
"""
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = ("train.py", "eval.py", "infer.py", "configs", "vit_ms", "scripts", "requirements.txt",
          "requirements-test.txt")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->$")
RUN_WITH = re.compile(r"^<!--\s*run with:\s*(.*?)\s*-->$")
BLOCK_TIMEOUT_S = 600


@dataclass
class CommandBlock:
    page: Path
    line: int  # the fence's line, 1-based
    text: str
    skip: Optional[str] = None  # why it is not run
    extra: str = ""  # arguments added to each python train.py command

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def command_blocks(page: Path) -> List[CommandBlock]:
    """The page's ```bash blocks, each with the marker on the line before it (if any)."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            start, body = i, []
            i += 1
            while not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            before = lines[start - 1].strip() if start else ""
            skip, extra = NOT_RUN.match(before), RUN_WITH.match(before)
            blocks.append(CommandBlock(page, start + 1, "\n".join(body), skip.group(1) if skip else None,
                                       extra.group(1) if extra else ""))
        i += 1
    return blocks


def with_sizes(text: str, extra: str) -> str:
    """`extra` appended to each `python train.py ...` command (continuation lines joined, comments dropped)."""
    if not extra:
        return text
    out = []
    for command in text.replace("\\\n", " ").split("\n"):
        if re.match(r"^\s*python train\.py\b", command):
            command = f"{command.split(' #')[0].rstrip()} {extra}"
        out.append(command)
    return "\n".join(out)


ALL_BLOCKS = [block for page in PAGES for block in command_blocks(page)]


def test_every_marker_says_why_or_what_size():
    for block in ALL_BLOCKS:
        assert block.skip is None or len(block.skip) > 5, f"{block.where}: 'not run:' needs its reason"
        for word in shlex.split(block.extra):
            assert word == "--set" or "=" in word, f"{block.where}: 'run with:' takes --set key=value items"


def test_sizes_are_added_to_train_commands_only():
    text = "python train.py --config demo.yaml   # about 2 minutes\npython eval.py --ckpt x \\\n  --topk 3"
    assert with_sizes(text, "--set train.epochs=1") == \
        "python train.py --config demo.yaml --set train.epochs=1\npython eval.py --ckpt x    --topk 3"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("docs_commands")
    for name in LINKED:
        (folder / name).symlink_to(ROOT / name)
    return folder


@pytest.mark.slow
def test_every_cpu_command_block_runs_as_written(scratch):
    python_dir = Path(sys.executable).parent  # `python` there: this interpreter (its virtual environment's bin)
    env = {**os.environ, "PATH": f"{python_dir}{os.pathsep}{os.environ['PATH']}", "GLOG_v": "3"}
    failures, report = [], []
    for block in ALL_BLOCKS:
        if block.skip is not None:
            report.append(f"{block.where}: not run ({block.skip})")
            continue
        began = time.perf_counter()
        script = with_sizes(block.text, block.extra)
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=scratch, env=env,
                              capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        seconds = time.perf_counter() - began
        report.append(f"{block.where}: exit {proc.returncode} in {seconds:.1f} s")
        if proc.returncode != 0:
            failures.append(f"{block.where} exited {proc.returncode}:\n{script}\n{proc.stdout[-1500:]}"
                            f"{proc.stderr[-3000:]}")
    print("\n" + "\n".join(report))
    assert failures == [], "\n\n".join(failures)

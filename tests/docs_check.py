"""Checks that keep the documentation true to the code (used by test_docs.py).

Every checker takes a Markdown text and the file's path (for its messages and relative links) and returns
problems as strings `path:line: what is wrong`, so a failing test names the file, the line and the bad item:

- `check_links`: every relative link and image resolves to a file of the repository, and a `#anchor` to a heading
  of the target page;
- `check_commands`: every `python train.py|eval.py|infer.py ...`, `python -m vit_ms....` and launch-script
  command in a code block or an inline code span names a module or script that exists, and only flags its
  argparse parser knows (built by the entry point's `build_parser()`, nothing is run), with the config and the
  `--set` overrides it shows loading and validating through `vit_ms.config_loader.load_config`;
- `check_flag_tables`: a table row that starts with a flag names a flag of the command shown above the table;
- `check_config_keys`: inline spans that are config settings (`train.ema_decay`, `optim.name: sgd`,
  `model.gelu=tanh model.norm_eps=1.0e-07`) and ```yaml config snippets name existing keys with valid values;
- `check_code_refs`: inline spans that name a repository path (`vit_ms/plan.py`) or a Python object
  (`vit_ms.weights.hub.PRETRAINED`) point at something that exists;
- `check_paths`: no text names a file outside the repository (a `../` path that climbs out of it, a home folder).
"""
import argparse
import ast
import dataclasses
import importlib
import importlib.util
import re
import shlex
import subprocess
import tempfile
import typing
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import yaml

from vit_ms import config as vit_config
from vit_ms.config import Config
from vit_ms.config_loader import load_config, resolve_config_path
from vit_ms.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
ENTRY_SCRIPTS = ("train.py", "eval.py", "infer.py")
# launch scripts: positional arguments before the config, then train.py's own options
LAUNCHERS = {"scripts/run_distribute_train.sh": 1, "scripts/run_distribute_train_ascend_ranktable.sh": 1}
COMMAND_LANGS = ("", "bash", "sh", "shell", "console")
FILE_SUFFIXES = ("py", "yaml", "yml", "json", "jsonl", "md", "log", "ckpt", "png", "txt", "sh", "csv", "mindir",
                 "onnx", "npz", "safetensors")
# What the project's files never name: a relative path that climbs out of the repository, or one machine's home.
RELATIVE_PATH = re.compile(r"(?<![\w.])(?:\.\./)+[\w.-][\w./-]*")
HOME_PATH = re.compile(r"(?<![\w.])/(?:home|Users)/[\w.-]+/")
# old spellings checkpoints may record (a user's config with one is refused, naming today's)
RENAMED_KEYS = {**getattr(vit_config, "RENAMED_KEYS", {}), **getattr(vit_config, "REMOVED_KEYS", {})}
SKIP_MARK = "<!-- docs-check: skip -->"  # before a code block that shows a mistake on purpose


# ------------------------------------------------------------------------------------------------------------
# Reading Markdown: code blocks, prose paragraphs and the inline code spans in them, with line numbers.


@dataclasses.dataclass
class Block:
    line: int  # first line of the content, 1-based
    lang: str
    text: str


@dataclasses.dataclass
class Span:
    line: int
    text: str


def split_markdown(text: str) -> Tuple[List[Block], List[Tuple[int, str]]]:
    """Fenced code blocks, and the prose paragraphs as (first line, text) outside them."""
    blocks, paragraphs = [], []
    lines = text.split("\n")
    i, para, para_start, skip_next = 0, [], 0, False
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)", line)
        if fence:
            if para:
                paragraphs.append((para_start, "\n".join(para)))
                para = []
            marker, body, start = fence.group(1), [], i + 2
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            if not skip_next:
                blocks.append(Block(start, fence.group(2).lower(), "\n".join(body)))
            skip_next = False
        elif line.strip() == "":
            if para:
                paragraphs.append((para_start, "\n".join(para)))
                para = []
        else:
            skip_next = line.strip() == SKIP_MARK
            if not para:
                para_start = i + 1
            para.append(line)
        i += 1
    if para:
        paragraphs.append((para_start, "\n".join(para)))
    return blocks, paragraphs


_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def code_spans(paragraphs) -> Iterator[Span]:
    for start, text in paragraphs:
        for m in _SPAN.finditer(text):
            yield Span(start + text.count("\n", 0, m.start()), m.group(2).strip())


def prose_without_spans(paragraphs) -> Iterator[Tuple[int, str]]:
    """Each prose line with its code spans blanked out (links inside code are not links)."""
    for start, text in paragraphs:
        blanked = _SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        for offset, line in enumerate(blanked.split("\n")):
            yield start + offset, line


# ------------------------------------------------------------------------------------------------------------
# Links and images.

_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def github_slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set:
    blocks, paragraphs = split_markdown(text)
    slugs, seen = set(), {}
    for _, para in paragraphs:
        for line in para.split("\n"):
            m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if m:
                slug = github_slug(m.group(1))
                count = seen.get(slug, 0)
                seen[slug] = count + 1
                slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def check_links(text: str, path: str, root: Path = ROOT) -> List[str]:
    problems = []
    here = (root / path).parent
    _, paragraphs = split_markdown(text)
    for line_no, line in prose_without_spans(paragraphs):
        for m in _LINK.finditer(line):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (here / file_part).resolve() if file_part else (root / path).resolve()
            if file_part.startswith("/"):
                problems.append(f"{path}:{line_no}: link '{target}' is absolute; use a path relative to {path}")
                continue
            try:
                resolved.relative_to(root.resolve())
            except ValueError:
                problems.append(f"{path}:{line_no}: link '{target}' leaves the repository")
                continue
            if not resolved.exists():
                problems.append(f"{path}:{line_no}: link '{target}' points at a missing file "
                                f"({resolved.relative_to(root.resolve())})")
                continue
            if anchor and resolved.suffix == ".md":
                target_text = text if not file_part else resolved.read_text(encoding="utf-8")
                if anchor not in anchors(target_text):
                    problems.append(f"{path}:{line_no}: link '{target}': no heading with anchor '#{anchor}' in "
                                    f"{resolved.relative_to(root.resolve())}")
    return problems


# ------------------------------------------------------------------------------------------------------------
# Config keys and values, through the project's own loader and validation.


def _sections() -> dict:
    hints = typing.get_type_hints(Config)
    return {name: tp for name, tp in hints.items() if dataclasses.is_dataclass(tp)}


def key_exists(key: str) -> bool:
    """A key of the config, or an old spelling a checkpoint may record (vit_ms.config.RENAMED_KEYS)."""
    section, _, name = key.partition(".")
    sections = _sections()
    return (section in sections and name in typing.get_type_hints(sections[section])) or key in RENAMED_KEYS


def validate_settings(config: Optional[str], overrides: List[str]) -> Optional[str]:
    """None when `config` (a path, a configs/ name, or None for the defaults) with `overrides` loads and validates,
    else the project's own error message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # an old key's warning: it still loads
            load_config(config, overrides)
    except ConfigError as err:
        return str(err)
    return None


_SETTING = re.compile(r"^([a-z_]+)\.([A-Za-z_][A-Za-z0-9_]*)(?:(=|:\s)(.*))?$", re.S)


def setting_span(text: str) -> Optional[List[Tuple[str, List[str]]]]:
    """A span made only of config settings, as [(key, ['key=value', ...])]: no value for a bare key, several for
    alternatives (`amp.norms: auto | half | float32`, `auto|on|off`, `auto / on / off`); None for anything else."""
    tokens = text.split() if "=" in text or ":" not in text else [text]
    settings = []
    for token in tokens:
        m = _SETTING.match(token)
        if not m or m.group(1) not in _sections() or m.group(2) in FILE_SUFFIXES:
            return None
        key = f"{m.group(1)}.{m.group(2)}"
        values = [] if m.group(3) is None else re.split(r"\s*\|\s*|\s+/\s+", m.group(4).strip())
        settings.append((key, [f"{key}={value}" for value in values]))
    return settings


def check_config_keys(text: str, path: str) -> List[str]:
    problems = []
    blocks, paragraphs = split_markdown(text)
    for span in code_spans(paragraphs):
        settings = setting_span(span.text)
        if settings is None:
            continue
        unknown = [key for key, _ in settings if not key_exists(key)]
        for key in unknown:
            problems.append(f"{path}:{span.line}: config key '{key}' (in `{span.text}`) does not exist in "
                            f"vit_ms/config.py")
        if unknown:
            continue
        first = [values[0] for _, values in settings if values]
        trials = [first] + [first[:i] + [alt] + first[i + 1:] for i, values in enumerate(v for _, v in settings if v)
                            for alt in values[1:]]  # all together, then each alternative in turn
        for overrides in trials if first else []:
            error = validate_settings(None, overrides)
            if error:
                problems.append(f"{path}:{span.line}: `{span.text}` is not a valid setting: {error}")
                break
    for block in blocks:
        if block.lang in ("yaml", "yml"):
            problems.extend(check_yaml_block(block, path))
    return problems


def check_yaml_block(block: Block, path: str) -> List[str]:
    try:
        values = yaml.safe_load(block.text)
    except yaml.YAMLError as err:
        return [f"{path}:{block.line}: yaml block does not parse: {err}"]
    fields = set(typing.get_type_hints(Config)) | {"base"}
    if not isinstance(values, dict) or not fields & set(values):
        return []  # not a config snippet (e.g. another tool's YAML)
    with tempfile.TemporaryDirectory() as tmp:
        snippet = Path(tmp) / "snippet.yaml"
        snippet.write_text(block.text, encoding="utf-8")
        error = validate_settings(str(snippet), [])
    return [f"{path}:{block.line}: yaml config snippet is not valid: {error}"] if error else []


# ------------------------------------------------------------------------------------------------------------
# Commands: modules, scripts, flags, configs and --set overrides.


def _runnable(name: str) -> Optional[bool]:
    """None when there is no such module; else whether `python -m name` runs something."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations is not None:  # a package runs its __main__.py
        return importlib.util.find_spec(f"{name}.__main__") is not None
    source = Path(spec.origin).read_text(encoding="utf-8") if spec.origin else ""
    return bool(re.search(r"__name__ == ['\"]__main__['\"]", source))


def _main_home(package: str) -> str:
    """The module a package's __main__.py takes `main` from (`from .cli import main` -> package.cli), read from
    its source without running it."""
    origin = importlib.util.find_spec(f"{package}.__main__").origin
    for node in ast.walk(ast.parse(Path(origin).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and any(a.name in ("main", "build_parser") for a in node.names):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            return ".".join(base + ([node.module] if node.module else []))
    return ""


@lru_cache(maxsize=None)
def entry_parser(entry: str) -> Tuple[Optional[argparse.ArgumentParser], str]:
    """(parser, '') for an entry script ('train.py') or module ('vit_ms.convert'), else (None, why not).

    The parser comes from the entry's `build_parser()`, or, for an entry module that imports its `main` from the
    module holding the code, from that module's `build_parser()`."""
    if entry.endswith(" --to"):  # python -m vit_ms.convert --to timm: the weights-out parser
        return importlib.import_module(entry.split()[0]).build_timm_parser(), ""
    if entry.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"_docs_entry_{Path(entry).stem}", ROOT / entry)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # defines functions only: main() runs under `if __name__ == "__main__"`
    elif importlib.util.find_spec(entry).submodule_search_locations is not None:
        home = _main_home(entry)  # a package's __main__.py runs when imported: read where its main comes from
        if not home:
            return None, f"{entry}/__main__.py imports no main() or build_parser() to check the docs' flags with"
        module = importlib.import_module(home)
    else:
        module = importlib.import_module(entry)
    build = getattr(module, "build_parser", None)
    if build is None and hasattr(module, "main"):
        build = getattr(importlib.import_module(module.main.__module__), "build_parser", None)
    if build is None:
        return None, f"{entry} has no build_parser() for the docs' flags to be checked against"
    return build(), ""


def command_lines(text: str) -> Iterator[Tuple[int, str]]:
    """Shell commands of a code block, continuation lines joined, with their first line number."""
    pending, start = "", 0
    for offset, line in enumerate(text.split("\n")):
        if not pending:
            start = offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, pending + line
        pending = ""
    if pending:
        yield start, pending


def check_command(command: str, where: str) -> List[str]:
    """Problems of one shell command line (`where` is 'path:line')."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:
        return []  # not shell (e.g. a log line)
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):  # VAR=value prefixes
        tokens.pop(0)
    if len(tokens) < 2:
        return []
    problems = []
    if tokens[0] == "python" and tokens[1] == "-m":
        if len(tokens) < 3 or not tokens[2].startswith("vit_ms") or "<" in tokens[2]:
            return []  # another tool's module, or a placeholder such as vit_ms.<command>
        entry, args = tokens[2], tokens[3:]
        runnable = _runnable(entry)
        if runnable is None:
            return [f"{where}: `python -m {entry}`: no module {entry}"]
        if not runnable:
            return [f"{where}: `python -m {entry}`: {entry} is not runnable (no __main__ block or __main__.py)"]
    elif tokens[0] == "python" and tokens[1].endswith(".py"):
        entry, args = tokens[1], tokens[2:]
        if not (ROOT / entry).is_file():
            return [f"{where}: `python {entry}`: no such script in the repository"]
        if entry not in ENTRY_SCRIPTS:
            return []
    elif tokens[0] == "bash" and tokens[1].endswith(".sh"):
        if not (ROOT / tokens[1]).is_file():
            return [f"{where}: `bash {tokens[1]}`: no such script in the repository"]
        if tokens[1] not in LAUNCHERS:
            return []
        rest = tokens[2 + LAUNCHERS[tokens[1]]:]
        entry, args = "train.py", (["--config", rest[0]] + rest[1:]) if rest else []
    else:
        return []
    parser, why = entry_parser(entry)
    if parser is None:
        return [f"{where}: {why}"]
    known = parser._option_string_actions
    config, overrides = None, []
    for i, token in enumerate(args):
        if not token.startswith("--"):
            continue
        flag, _, inline = token.partition("=")
        if flag not in known:
            problems.append(f"{where}: {entry} has no flag {flag}")
            continue
        value = inline or (args[i + 1] if i + 1 < len(args) else "")
        if flag == "--set":
            overrides.append(value)
        elif flag == "--config":
            config = value
    if config is not None:
        bare = "/" not in config or config.startswith("configs/")
        try:
            resolve_config_path(config)
        except ConfigError:
            if bare and "<" not in config:
                problems.append(f"{where}: --config {config}: no such file in configs/")
            config = None
    checked = [o for o in overrides if re.match(r"^[a-z_]+\.[A-Za-z_]\w*=", o)]
    if checked or config:
        error = validate_settings(config, checked)
        if error:
            problems.append(f"{where}: `{' '.join(tokens)}` does not validate: {error}")
    return problems


def check_commands(text: str, path: str) -> List[str]:
    problems = []
    blocks, paragraphs = split_markdown(text)
    for block in blocks:
        if block.lang in COMMAND_LANGS:
            for offset, command in command_lines(block.text):
                problems.extend(check_command(command, f"{path}:{block.line + offset}"))
    for span in code_spans(paragraphs):
        if re.match(r"^(python|bash)\s", span.text):
            problems.extend(check_command(span.text, f"{path}:{span.line}"))
        else:
            for value in re.findall(r"--set[ =]([a-z_]+\.[A-Za-z_]\w*=\S+)", span.text):
                error = validate_settings(None, [value])
                if error:
                    problems.append(f"{path}:{span.line}: `--set {value}` does not validate: {error}")
    return problems


_FLAG_ROW = re.compile(r"^\|\s*`(--[a-z][a-z0-9-]*)")
_TABLE_RULE = re.compile(r"^\|[\s:|-]+\|\s*$")


def command_entry(command: str) -> Optional[str]:
    """The entry point a shell command runs ('train.py', 'vit_ms.export'; a launch script runs train.py), or
    None for another command."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:
        return None
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        tokens.pop(0)
    if len(tokens) >= 3 and tokens[:2] == ["python", "-m"] and tokens[2].startswith("vit_ms") and _runnable(tokens[2]):
        return tokens[2]
    if len(tokens) >= 2 and tokens[0] == "python" and tokens[1] in ENTRY_SCRIPTS:
        return tokens[1]
    if len(tokens) >= 2 and tokens[0] == "bash" and tokens[1] in LAUNCHERS:
        return "train.py"
    return None


def check_flag_tables(text: str, path: str) -> List[str]:
    """Every table row that starts with a flag (`| `--topk K` | ...`) names a flag of the command shown last
    before the table in a code block."""
    blocks, paragraphs = split_markdown(text)
    events = sorted([(b.line, b.text, True) for b in blocks if b.lang in COMMAND_LANGS]
                    + [(line, para, False) for line, para in paragraphs])
    entry, problems = None, []
    for line, body, is_block in events:
        if is_block:
            for _, command in command_lines(body):
                found_entry = command_entry(command)
                if found_entry == "vit_ms.convert" and " --to " in f" {command} ":
                    found_entry = "vit_ms.convert --to"  # weights out: the module's build_timm_parser()
                entry = found_entry or entry
            continue
        rows = body.split("\n")
        for offset, row in enumerate(rows):
            found = _FLAG_ROW.match(row)
            if found is None or (offset + 1 < len(rows) and _TABLE_RULE.match(rows[offset + 1])):
                continue  # not a flag row, or the table's header
            flag, where = found.group(1), f"{path}:{line + offset}"
            if entry is None:
                problems.append(f"{where}: the table row of {flag} follows no command to check it against")
                continue
            parser, why = entry_parser(entry)
            if parser is None:
                problems.append(f"{where}: {why}")
            elif flag not in parser._option_string_actions:
                problems.append(f"{where}: the table lists {flag}, which {entry} (the command above it) does not have")
    return problems


# ------------------------------------------------------------------------------------------------------------
# Paths and Python objects named in inline code.


def _resolve_object(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def check_code_refs(text: str, path: str, root: Path = ROOT) -> List[str]:
    problems = []
    _, paragraphs = split_markdown(text)
    for span in code_spans(paragraphs):
        m = re.match(r"^((?:vit_ms|tests|scripts|configs|docs)/[\w./-]*[\w/])$", span.text)
        if m and not any(c in span.text for c in "<*"):
            if not (root / m.group(1)).exists():
                problems.append(f"{path}:{span.line}: `{span.text}` does not exist in the repository")
            continue
        m = re.match(r"^(vit_ms(?:\.[A-Za-z_]\w*)+)(?:\(.*\))?$", span.text)
        if m and not _resolve_object(m.group(1)):
            problems.append(f"{path}:{span.line}: `{span.text}`: no such module or object")
    return problems


# ------------------------------------------------------------------------------------------------------------
# Words and paths in any text file.


def check_paths(text: str, path: str, root: Path = ROOT) -> List[str]:
    """Problems of one file's text (`path` relative to `root`): paths a user's checkout does not have."""
    problems = []
    here = (root / path).parent.resolve()
    for line_no, line in enumerate(text.split("\n"), 1):
        for m in RELATIVE_PATH.finditer(line):
            if not (here / m.group(0)).resolve().is_relative_to(root.resolve()):
                problems.append(f"{path}:{line_no}: names a file outside the repository ('{m.group(0)}')")
        for m in HOME_PATH.finditer(line):
            problems.append(f"{path}:{line_no}: names a file in one machine's home folder ('{m.group(0)}')")
    return problems


def repository_files(root: Path = ROOT) -> List[str]:
    """Tracked files and new files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return sorted({line for line in out.split("\n") if line and (root / line).is_file()})


def text_of(path: str, root: Path = ROOT) -> Optional[str]:
    data = (root / path).read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None

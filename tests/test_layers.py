"""The layers of vit_ms point down: the table in vit_ms/__init__.py's docstring against every import in the code.

Imports are read with `ast` (nothing is imported), function-local ones included:
- a module imports from its own package and from the layers below it, never up and never a neighbour on its
  own layer (data <-> weights, models <-> figures, ...);
- no import circle between modules;
- a function-local import carries its reason in a comment beside it (on its line, on the line above, or on
  another line of the same run of imports);
- only the train command imports the trainer.
The checker itself is tested on a small made-up package, so each rule is seen to fail.
"""
import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^    (\w+) +((?:\w+ )*\w+) {2,}\S")  # "    <layer>   <group> <group> ...   <what it is>"


def layer_table(package: Path) -> Dict[str, int]:
    """{group: rank} from the package docstring's table, top row first; the ground gets rank 0."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")), clean=False)
    rows = [m.group(2).split() for m in map(ROW.match, doc.splitlines()) if m]
    return {group: len(rows) - 1 - i for i, groups in enumerate(rows) for group in groups}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path, root: Path, top: str) -> List[Tuple[str, int, bool]]:
    """(imported module of package `top`, line, function-local?) for each import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}", root) else base for a in node.names]
        else:
            continue
        found += [(t, node.lineno, id(node) in local) for t in targets if t == top or t.startswith(top + ".")]
    return found


def group_of(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def local_imports_without_reason(path: Path) -> List[int]:
    """Lines of function-local imports (any package) with no comment in their run of import lines or just above."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    missing = []
    for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in ast.walk(func):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            first, last = node.lineno - 1, node.end_lineno - 1
            while first > 0 and lines[first - 1].lstrip().startswith(("import ", "from ", "#")):
                first -= 1
            while last + 1 < len(lines) and lines[last + 1].lstrip().startswith(("import ", "from ", "#")):
                last += 1
            if not any("#" in line for line in lines[max(first - 1, 0):last + 1]):
                missing.append(node.lineno)
    return missing


def find_circles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return circles


def layer_problems(root: Path, top: str) -> List[str]:
    """Every broken rule in package `top` under `root`, one line each (empty: the layers hold)."""
    package = root / top
    ranks = layer_table(package)
    problems, edges = [], {}
    for path in sorted(package.rglob("*.py")):
        source = module_name(path, root)
        mine = group_of(source)
        if mine and mine not in ranks:
            problems.append(f"{source}: '{mine}' is on no layer of {top}/__init__.py's table")
            continue
        edges.setdefault(source, set())
        for target, line, _ in imports_of(path, root, top):
            edges[source].add(target)
            theirs = group_of(target)
            if not mine or not theirs or theirs == mine:
                continue
            if theirs not in ranks or ranks[theirs] > ranks[mine]:
                problems.append(f"{source}:{line} imports {target}, a layer above ({mine} -> {theirs})")
            elif ranks[theirs] == ranks[mine]:
                problems.append(f"{source}:{line} imports {target}, a neighbour on its own layer ({mine} -> {theirs})")
        problems += [f"{source}:{line} imports inside a function without a reason in a comment beside it"
                     for line in local_imports_without_reason(path)]
    problems += [f"import circle: {' -> '.join(c)}" for c in find_circles(edges)]
    return problems


def test_vit_ms_layers_point_down_without_circles():
    assert layer_problems(REPO, "vit_ms") == []


def test_every_package_of_vit_ms_is_on_a_layer():
    ranks = layer_table(REPO / "vit_ms")
    groups = {p.stem if p.is_file() else p.name for p in (REPO / "vit_ms").iterdir()
              if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert groups == set(ranks)
    assert ranks["logs"] == 0 and ranks["errors"] == 1 and ranks["train"] < ranks["inference"] < ranks["tools"] < ranks["export"]


def test_scripts_give_reasons_for_their_local_imports():
    scripts = [REPO / "train.py", REPO / "eval.py", REPO / "infer.py", *sorted((REPO / "scripts").glob("*.py"))]
    assert {p.name: local_imports_without_reason(p) for p in scripts} == {p.name: [] for p in scripts}


def test_only_the_train_command_imports_the_trainer():
    users = {module_name(p, REPO) for p in REPO.glob("**/*.py")
             if ".venv" not in p.parts and "tests" not in p.parts
             and any(t == "vit_ms.train.trainer" for t, _, _ in imports_of(p, REPO, "vit_ms"))}
    assert users <= {"train", "scripts.make_readme_figures"}


TABLE = '''"""made-up package.

    top      cmd                 the command
    middle   alpha beta          two neighbours
    ground   base                the ground
"""
'''


def make_package(tmp_path: Path, files: Dict[str, str]) -> Path:
    for name, text in {"pkg/__init__.py": TABLE, **files}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_checker_passes_downward_imports(tmp_path):
    root = make_package(tmp_path, {
        "pkg/base.py": "import os\n",
        "pkg/alpha/__init__.py": "",
        "pkg/alpha/one.py": "from ..base import x\nfrom . import two\n",
        "pkg/alpha/two.py": "def f():\n    import numpy  # optional package\n",
        "pkg/cmd.py": "from .alpha.one import y\nfrom .beta import z\n",
        "pkg/beta.py": "from pkg.base import x\n",
    })
    assert layer_problems(root, "pkg") == []


@pytest.mark.parametrize("files, expected", [
    ({"pkg/base.py": "from .cmd import main\n", "pkg/cmd.py": ""},
     "pkg.base:1 imports pkg.cmd, a layer above (base -> cmd)"),
    ({"pkg/alpha.py": "import pkg.beta\n", "pkg/beta.py": ""},
     "pkg.alpha:1 imports pkg.beta, a neighbour on its own layer (alpha -> beta)"),
    ({"pkg/alpha/__init__.py": "", "pkg/alpha/a.py": "from .b import f\n", "pkg/alpha/b.py": "def f():\n"
      "    from .a import g  # not a reason that helps: still a circle\n"},
     "import circle: pkg.alpha.a -> pkg.alpha.b"),
    ({"pkg/base.py": "def f():\n    import json\n    return json\n"},
     "pkg.base:2 imports inside a function without a reason in a comment beside it"),
    ({"pkg/gamma.py": ""}, "pkg.gamma: 'gamma' is on no layer of pkg/__init__.py's table"),
])
def test_the_checker_names_each_broken_rule(tmp_path, files, expected):
    assert layer_problems(make_package(tmp_path, files), "pkg") == [expected]

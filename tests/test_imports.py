"""The package's import rules, read from the source (every import, module- or function-level).

* the foundations (``model``, ``moe``, ``data``, ``tasks``, ``parallel``, ``layers``, ``compat``,
  ``utils``) never import the tools built on them (``train``, ``inference``, ``convert``,
  ``eval``, ``launch``);
* ``train``, ``inference`` and ``convert`` depend on ``model`` and never on each other;
* ``utils`` imports nothing of nemo_neko; only ``compat`` imports Megatron-Core.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nemo_neko"
FOUNDATIONS = ("model", "moe", "data", "tasks", "parallel", "layers", "compat", "utils")
TOOLS = ("train", "inference", "convert", "eval", "launch", "experiment")
SIBLINGS = ("train", "inference", "convert")


def imports_of(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """``(line, module)`` of every import statement in ``path`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "nemo_neko" and len(parts) > 1 else None


def modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_the_reader_sees_function_level_and_relative_imports(tmp_path):
    probe = PACKAGE / "inference" / "correct.py"  # imports Checkpointer inside a function
    assert "nemo_neko.model.checkpoint" in {m for _, m in imports_of(probe)}
    (tmp_path / "nemo_neko" / "train").mkdir(parents=True)
    relative = tmp_path / "nemo_neko" / "train" / "x.py"
    relative.write_text("def f():\n    from ..inference import correct\n")
    assert imports_of(relative, root=tmp_path) == [(2, "nemo_neko.inference")]
    assert len(modules()) > 100


@pytest.mark.parametrize("rule", ["foundations", "siblings", "utils", "megatron"])
def test_import_rules(rule):
    broken = []
    for path in modules():
        own = path.relative_to(PACKAGE).parts[0]
        for line, module in imports_of(path):
            target = subpackage(module)
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
            if rule == "foundations" and own in FOUNDATIONS and target in TOOLS:
                broken.append(where)
            if rule == "siblings" and own in SIBLINGS and target in SIBLINGS and target != own:
                broken.append(where)
            if rule == "utils" and own == "utils" and module.startswith("nemo_neko"):
                if target != "utils":
                    broken.append(where)
            if rule == "megatron" and module.split(".")[0] == "megatron" and own != "compat":
                broken.append(where)
    assert not broken, "\n".join(broken)

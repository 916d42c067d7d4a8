"""The package layering, read from the source with ``ast`` (nothing is imported).

- ``bltdata.nn`` (the transformer parts) imports neither model package;
- ``bltdata.entropy`` and ``bltdata.blt`` share parts only through ``bltdata.nn``: neither
  imports the other (the release converter that needs both is ``bltdata.convert.blt_checkpoint``);
- ``cli/`` and ``pipelines/`` use only public library names: no ``from bltdata.x import _name``,
  no ``import bltdata._x`` and no ``module._name`` on an imported library name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

def _python_files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}"
    return files


def _package_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts[:-1])


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in ``path``, function-level imports included;
    ``from bltdata import blt`` counts as ``bltdata.blt``, relative imports are resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = _package_of(path).split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _crossings(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in _python_files(folder):
        rel = path.relative_to(ROOT).as_posix()
        lines = set()
        for line, module in imported_modules(path):
            hit = next((f for f in forbidden if module == f or module.startswith(f + ".")), None)
            if hit and line not in lines:
                lines.add(line)  # one report per import statement
                bad.append(f"{rel}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("folder, forbidden", [
    ("bltdata/nn", ("bltdata.entropy", "bltdata.blt")),
    ("bltdata/entropy", ("bltdata.blt",)),
    ("bltdata/blt", ("bltdata.entropy",)),
])
def test_model_packages_share_parts_only_through_nn(folder, forbidden):
    assert _crossings(folder, forbidden) == []


def test_both_model_packages_use_the_shared_parts():
    for folder in ("bltdata/entropy", "bltdata/blt"):
        modules = {m for path in _python_files(folder) for _, m in imported_modules(path)}
        assert any(m.startswith("bltdata.nn.") for m in modules), f"{folder} does not use bltdata.nn"


def test_the_release_converter_lives_above_both_model_packages():
    """The one module that needs both models is a converter, outside either package."""
    modules = {m for _, m in imported_modules(ROOT / "bltdata/convert/blt_checkpoint.py")}
    assert any(m.startswith("bltdata.entropy.") for m in modules)
    assert any(m.startswith("bltdata.blt.") for m in modules)


def test_the_checker_sees_a_crossing(tmp_path, monkeypatch):
    """A planted `from bltdata import blt` (function-level) and a relative import are both found."""
    package = tmp_path / "bltdata" / "entropy"
    package.mkdir(parents=True)
    (package / "bad.py").write_text("def f():\n    from bltdata import blt\n")
    (package / "relative.py").write_text("from ..blt.model import BLT\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert _crossings("bltdata/entropy", ("bltdata.blt",)) == [
        "bltdata/entropy/bad.py:2 imports bltdata.blt", "bltdata/entropy/relative.py:1 imports bltdata.blt.model"]


def private_uses(path: Path) -> list[str]:
    """Private library names ``path`` imports or reaches through an imported library name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    library_names, bad = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bltdata"):
            for alias in node.names:
                library_names.add(alias.asname or alias.name)
                if _private(alias.name):
                    bad.append(f"{node.lineno}: from {node.module} import {alias.name}")
            if any(_private(part) for part in node.module.split(".")):
                bad.append(f"{node.lineno}: from {node.module}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bltdata"):
                    library_names.add(alias.asname or alias.name.split(".")[0])
                    if any(_private(part) for part in alias.name.split(".")):
                        bad.append(f"{node.lineno}: import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and \
                isinstance(node.value, ast.Name) and node.value.id in library_names:
            bad.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return bad


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("folder", ["cli", "pipelines"])
def test_cli_and_pipelines_use_only_public_library_names(folder):
    files = _python_files(folder)
    bad = [f"{path.relative_to(ROOT)}:{use}" for path in files for use in private_uses(path)]
    assert bad == []


def test_the_private_name_checker_finds_each_form(tmp_path):
    source = tmp_path / "cli.py"
    source.write_text("from bltdata.shards import _open, ShardWriter\nimport bltdata._hidden\n"
                      "from bltdata import shards\nshards._size(1)\nfrom bltdata import __version__\n")
    assert private_uses(source) == ["1: from bltdata.shards import _open", "2: import bltdata._hidden",
                                    "4: shards._size"]

"""The package's layers: imports point one way, the core imports light, the distribution
name does not collide."""

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "odeformer"

# Layer of each part of the package; a module may import its own part and lower layers only.
LAYERS = {"core": 0, "parallel": 1, "categorical": 2, "language": 3, "experiment": 4, "analysis": 4}


def _part(module: str) -> str:
    """``odeformer.categorical.embeddings`` -> ``categorical``; core modules -> ``core``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("odeformer"):
            names |= {f"{node.module}.{a.name}" if node.module == "odeformer" else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("odeformer")}
    return names


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down_the_layers(path):
    module = _module(path)
    part = _part(module)
    for imported in _imports(path):
        other = _part(imported)
        if module == "odeformer":  # the package's __init__ re-exports the core only
            assert other == "core", f"odeformer/__init__.py imports {imported}"
            continue
        assert other == part or LAYERS[other] < LAYERS[part], (
            f"{module} ({part}) imports {imported} ({other}): imports point down "
            f"core <- parallel <- categorical <- language <- experiment/analysis")


def test_importing_odeformer_registers_nothing_and_stays_light():
    """A fresh interpreter: the core loads no registry (experiment), no pandas, no
    ml_collections, no orbax."""
    code = ("import json, sys, odeformer; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pandas', 'ml_collections', 'orbax') or m.startswith('odeformer.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout
    loaded = json.loads(out)
    assert loaded and not [m for m in loaded if not m.startswith("odeformer._")], loaded


def test_the_distribution_name_does_not_collide_and_every_subpackage_ships():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    # "odeformer" on the package index is an unrelated project (symbolic regression of ODEs).
    assert project["project"]["name"] == "odeformer-jax"
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["odeformer*"]
    for folder in [p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"]:
        assert (folder / "__init__.py").exists(), f"{folder} is not a package: it would not ship"

"""``make test`` has what the Mp1 code and suite need: declared, installed, and the tools they run.

A fresh machine gets its Python packages from pyproject.toml (``make setup``
installs ``.[test,bench]``) and its tools from scripts/setup.sh. So every
third-party module mep/mp1 imports must be a runtime dependency, every one
tests/mp1 imports a runtime or test dependency, all of them importable, and
every program the suite or the benchmark runs must be in setup.sh's list.
"""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FIRST_PARTY = {"mep", "mepm", "upf_sim", "tests", "bench"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(*groups: str) -> set[str]:
    project = PYPROJECT["project"]
    specs = list(project["dependencies"])
    for group in groups:
        specs += project["optional-dependencies"][group]
    return {_normalise(re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]) for spec in specs}


def _imported(paths: list[Path]) -> set[str]:
    modules: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in FIRST_PARTY and m not in sys.stdlib_module_names}


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    owners = importlib.metadata.packages_distributions()
    return {m: {_normalise(d) for d in owners.get(m, [])} for m in modules}


@pytest.mark.parametrize(
    ("tree", "groups"),
    [("mep/mp1", ()), ("tests/mp1", ("test",)), ("bench", ("test", "bench"))],
    ids=["mep-mp1", "tests-mp1", "bench"],
)
def test_every_third_party_import_is_declared_and_installed(tree: str, groups: tuple[str, ...]) -> None:
    files = sorted((ROOT / tree).rglob("*.py"))
    if tree == "bench":
        files = [ROOT / "bench" / "mp1_api.py", ROOT / "bench" / "_harness.py"]
    declared = _declared(*groups)
    for module, dists in sorted(_distributions(_imported(files)).items()):
        importlib.import_module(module)  # installed
        assert dists & declared, f"{tree} imports {module} (from {sorted(dists)}), which pyproject.toml does not declare"


def test_the_tools_the_suite_and_the_benchmark_run_are_installed_by_setup() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for tool, package in (("openssl", "openssl"), ("wrk", "wrk")):
        assert re.search(rf"\b{package}\b", setup), f"scripts/setup.sh does not install {package}"
        assert shutil.which(tool), f"{tool} is not on PATH: run make setup"


def test_pytest_runs_this_suite_with_its_marker_and_plugins() -> None:
    options = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "tests" in options["testpaths"] and "--strict-markers" in options["addopts"]
    assert any(m.startswith("mp1_config:") for m in options["markers"])
    for plugin in ("pytest_asyncio", "schemathesis", "hypothesis"):
        importlib.import_module(plugin)


def test_the_mep_console_script_is_installed_next_to_the_interpreter() -> None:
    script = Path(sys.executable).with_name("mep")
    assert script.exists(), f"{script} is missing: make setup installs the project (pip install -e .)"

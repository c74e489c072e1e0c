"""``__all__`` of every module under mep/ names only what exists, and mep.models
exports every class of SCHEMAS."""
from __future__ import annotations

import ast
import importlib
from enum import StrEnum
from pathlib import Path

import pytest
from pydantic import BaseModel

import mep
from mep.models import SCHEMAS

MEP_DIR = Path(mep.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(MEP_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _defines_all(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)
        ) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


MODULES_WITH_ALL = sorted(_module_name(p) for p in MEP_DIR.rglob("*.py") if _defines_all(p))


def test_modules_with_all_were_found() -> None:
    assert {"mep.models", "mep.models.types", "mep.models.app_support", "mep.models.service_mgmt"} <= set(
        MODULES_WITH_ALL
    )


@pytest.mark.parametrize("name", MODULES_WITH_ALL)
def test_all_names_exist_and_are_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert isinstance(exported, (list, tuple)) and all(isinstance(n, str) for n in exported)
    assert sorted(n for n in exported if not hasattr(module, n)) == []
    assert len(set(exported)) == len(exported), f"duplicates in {name}.__all__"


@pytest.mark.parametrize("name", MODULES_WITH_ALL)
def test_star_import_gives_exactly_all(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)  # noqa: S102 - the star import itself is under test
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(importlib.import_module(name).__all__)


def test_models_export_every_schema_class() -> None:
    import mep.models as models

    for yaml_name, cls in SCHEMAS.items():
        assert issubclass(cls, (BaseModel, StrEnum))
        assert cls.__name__ in models.__all__, f"{cls.__name__} ({yaml_name}) not in mep.models.__all__"
        assert getattr(models, cls.__name__) is cls


def test_models_export_every_public_class_of_their_modules() -> None:
    """Each model module's __all__ lists every public class it defines (so SCHEMAS cannot miss one)."""
    for name in ("mep.models.common", "mep.models.app_support", "mep.models.service_mgmt"):
        module = importlib.import_module(name)
        defined = {
            attr
            for attr, value in vars(module).items()
            if isinstance(value, type) and value.__module__ == name and not attr.startswith("_")
        }
        assert defined <= set(module.__all__), f"{name}: {sorted(defined - set(module.__all__))} not exported"

"""make_engine: the one place that turns ``dataplane.engine`` into an Engine.

Each engine lives in its own module and is imported only when chosen, so a
daemon running the reference engine never imports bcc. The engine in use is
the one configured, with one exception, never silent: when ``xdp`` cannot
load or attach (bcc missing, no BPF rights, a driver without XDP), the
fastpath engine runs instead, a warning says why, and ``describe()`` keeps
saying it (``fallback_from``). Any other missing or failing engine is an error
(STYLE.md section 2).

Constructors: ``ReferenceEngine()`` needs nothing; ``XdpEngine(config, netns=)``
and ``FastpathEngine(config, netns=)`` take the whole Config (ports,
capacities, XDP mode, pin root, instance name) and ``dataplane.netns``.
"""
from __future__ import annotations

import importlib

from ..config import Config, EngineName
from ..errors import AttachError, DataplaneError, LoadError
from ..log import get_logger
from .engine import Engine

__all__ = ["make_engine", "ENGINE_MODULES"]

log = get_logger(__name__)

# engine name -> (module, class)
ENGINE_MODULES: dict[EngineName, tuple[str, str]] = {
    EngineName.REFERENCE: ("mep.dataplane.reference", "ReferenceEngine"),
    EngineName.XDP: ("mep.dataplane.xdp", "XdpEngine"),
    EngineName.FASTPATH: ("mep.dataplane.fastpath", "FastpathEngine"),
}


def make_engine(config: Config) -> Engine:
    """Build the engine named by ``config.dataplane.engine``.

    Raises DataplaneError when that engine's module is not part of this build;
    load and attach failures of the engine itself propagate (LoadError,
    AttachError).
    """
    name = config.dataplane.engine
    module_name, class_name = ENGINE_MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise  # the engine exists but one of its own imports is missing
        raise DataplaneError(
            f"engine '{name.value}' is not available yet: {module_name} is not part of this build; "
            "set dataplane.engine to one that is (reference)",
            field="dataplane.engine",
        ) from None
    engine_class = getattr(module, class_name)
    if name is EngineName.REFERENCE:
        engine: Engine = engine_class()
        return engine
    try:
        engine = engine_class(config, netns=config.dataplane.netns)
    except (LoadError, AttachError, ModuleNotFoundError) as exc:
        if name is not EngineName.XDP or (isinstance(exc, ModuleNotFoundError) and exc.name != "bcc"):
            raise
        reason = f"xdp could not run: {exc}"
        log.warning("engine_fallback", configured="xdp", engine="fastpath", reason=reason)
        from .fastpath import FastpathEngine

        engine = FastpathEngine(config, netns=config.dataplane.netns, fallback_from=reason)
    return engine

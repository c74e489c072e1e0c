"""Structured logging on stdlib ``logging``: an event name plus keyword fields.

::

    log = get_logger(__name__)
    log.info("ruleset_applied", generation=3, rules=10)

``setup_logging(config.log)`` installs one handler on the ``mep`` logger tree
(and the root logger, so library warnings are not lost). Two formats:

- ``json``: one object per line, ``{"ts", "level", "logger", "event", ...fields}``;
  ``ts`` is RFC 3339 UTC with milliseconds. Fields that JSON cannot hold are
  written with ``str()``.
- ``text``: ``2024-05-01T12:00:00.123Z INFO mep.daemon ruleset_applied generation=3 rules=10``;
  values with spaces are quoted.

Records from other libraries (aiohttp, asyncio) carry no fields; their
message becomes the ``event``.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from .config import LogConfig

__all__ = ["StructLogger", "get_logger", "setup_logging", "JsonFormatter", "TextFormatter"]

_FIELDS = "mep_fields"


class StructLogger:
    """A thin wrapper over a stdlib logger whose calls take an event and fields."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    @property
    def name(self) -> str:
        """The underlying stdlib logger's name."""
        return self._logger.name

    def _log(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            # stacklevel 3: the caller of debug()/info()/..., not this helper.
            self._logger.log(level, event, extra={_FIELDS: fields}, exc_info=exc_info, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at DEBUG with ``fields``."""
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at INFO with ``fields``."""
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at WARNING with ``fields``."""
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at ERROR with ``fields``."""
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log ``event`` at ERROR with ``fields`` and the current traceback."""
        self._log(logging.ERROR, event, fields, exc_info=True)


def get_logger(name: str) -> StructLogger:
    """The structured logger for module ``name`` (pass ``__name__``)."""
    return StructLogger(logging.getLogger(name))


def _timestamp(record: logging.LogRecord) -> str:
    secs = int(record.created)
    millis = int((record.created - secs) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{millis:03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = getattr(record, _FIELDS, {})
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _fields(record).items():
            # A field never overwrites the four fixed keys.
            out[key if key not in out else f"field_{key}"] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger event key=value ...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={_text_value(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(config: LogConfig, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) in ``config.format`` at ``config.level``.

    Calling it again replaces the handler it installed before.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.set_name("mep")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "mep"]:
        root.removeHandler(old)
    root.addHandler(handler)
    level = getattr(logging, config.level.upper())
    root.setLevel(level)
    # aiohttp logs every admin request at INFO; keep it for debug.
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)

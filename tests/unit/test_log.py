"""mep.log: event + fields, as JSON lines or text."""
from __future__ import annotations

import io
import json
import logging
from typing import Iterator

import pytest

from mep.config import LogConfig
from mep.log import get_logger, setup_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_event_and_fields(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(LogConfig(level="info", format="json"), stream=out)
    log = get_logger("mep.test")
    log.info("ruleset_applied", generation=3, rules=10, path=b"x")
    log.debug("hidden")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "ruleset_applied" and record["level"] == "info" and record["logger"] == "mep.test"
    assert (record["generation"], record["rules"], record["path"]) == (3, 10, "b'x'")
    assert record["ts"].endswith("Z") and "T" in record["ts"]


def test_a_field_never_overwrites_the_fixed_keys(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(LogConfig(format="json"), stream=out)
    get_logger("mep.test").warning("x", level="mine")
    record = json.loads(out.getvalue())
    assert record["level"] == "warning" and record["field_level"] == "mine"


def test_text_lines_quote_values_with_spaces(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(LogConfig(level="debug", format="text"), stream=out)
    get_logger("mep.test").error("rule_problem", rule="r 1", field="dstInterface")
    line = out.getvalue().strip()
    assert line.split(" ", 1)[1] == 'ERROR mep.test rule_problem rule="r 1" field=dstInterface'


def test_exceptions_carry_the_traceback(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(LogConfig(format="json"), stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("mep.test").exception("failed", step=1)
    record = json.loads(out.getvalue())
    assert "ValueError: boom" in record["traceback"]


def test_setup_twice_keeps_one_handler(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(LogConfig(), stream=out)
    setup_logging(LogConfig(), stream=out)
    get_logger("mep.test").info("once")
    assert len(out.getvalue().splitlines()) == 1

"""Mp1: the MEC 011 v2.1.1 REST API for MEC applications.

``ETSI_DIR`` holds the official OpenAPI files (MecAppSupportApi.yaml,
MecServiceMgmtApi.yaml, BSD-3-Clause, see etsi/LICENSE) that the models and
the server conform to.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["ETSI_DIR"]

ETSI_DIR = Path(__file__).resolve().with_name("etsi")

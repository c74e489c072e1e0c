"""The Mm5 methods, read from the compiled proto: the one table the server and the client share.

mm5_pb2 (messages and the service descriptor) is generated from mm5.proto by
``make setup``; no ``*_pb2_grpc`` module is generated. The server registers a
handler for each method of the descriptor and the client calls them by the
same table, so a method added to the proto without an implementation fails
the server's start (and tests/mm5), instead of answering UNIMPLEMENTED.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf.message import Message

try:
    from . import mm5_pb2 as pb
except ModuleNotFoundError as exc:  # pragma: no cover - a checkout that never ran make setup
    raise ImportError(
        "mep/mm5/mm5_pb2.py is missing: it is generated from mep/mm5/mm5.proto by 'make setup' "
        "(python -m grpc_tools.protoc -Imep/mm5=mep/mm5 --python_out=. --pyi_out=. mep/mm5/mm5.proto)"
    ) from exc

__all__ = ["pb", "SERVICE_NAME", "Method", "METHODS", "FIELD_METADATA_KEY", "ERROR_METADATA_KEY"]

SERVICE_NAME = "mep.mm5.v1.Mm5"
# Trailing metadata of an error status: the request field it names, if any,
# and the mep.errors class it came from (a status without it is gRPC's own:
# the MEP was not reached).
FIELD_METADATA_KEY = "mep-field"
ERROR_METADATA_KEY = "mep-error"


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: its name, path, message classes and whether it streams responses."""

    name: str  # as in the proto: "ApplyConfiguration"
    attr: str  # the servicer method and client method name: "apply_configuration"
    path: str  # "/mep.mm5.v1.Mm5/ApplyConfiguration"
    request: type[Message]
    response: type[Message]
    streaming: bool


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _methods() -> dict[str, Method]:
    service = pb.DESCRIPTOR.services_by_name["Mm5"]
    assert service.full_name == SERVICE_NAME
    table = {}
    for m in service.methods:
        table[m.name] = Method(
            name=m.name,
            attr=_snake(m.name),
            path=f"/{SERVICE_NAME}/{m.name}",
            request=getattr(pb, m.input_type.name),
            response=getattr(pb, m.output_type.name),
            streaming=m.server_streaming,
        )
    return table


METHODS: dict[str, Method] = _methods()

"""The one exception tree of the platform.

::

    MepError                         http  grpc
    ├── ConfigError                   -    (exit 2 from the CLI)
    ├── InvalidInput                 400   INVALID_ARGUMENT     names the field
    │   └── CompileError             400   INVALID_ARGUMENT     one RuleProblem per bad rule
    │       └── CapacityError        400   RESOURCE_EXHAUSTED
    ├── Unauthorized                 401   UNAUTHENTICATED
    ├── Forbidden                    403   PERMISSION_DENIED
    ├── NotFound                     404   NOT_FOUND
    ├── Conflict                     409   ALREADY_EXISTS
    │   └── InvalidTransition        409   FAILED_PRECONDITION  app lifecycle
    ├── PreconditionFailed           412   FAILED_PRECONDITION  If-Match / generation
    ├── TooBusy                      429   RESOURCE_EXHAUSTED   a bounded resource is full (streams, backlog)
    ├── StoreUnavailable             503   UNAVAILABLE
    ├── PeerUnavailable              503   UNAVAILABLE          a MEP (for MEPM) does not answer
    └── DataplaneError               500   INTERNAL
        ├── LoadError                       verifier log + XDP mode tried
        ├── AttachError
        └── MapWriteError                   never logged-and-skipped

The HTTP layer turns any of these into an RFC 7807 ProblemDetails and the gRPC
layer into a status with the same detail; neither needs a table of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MepError",
    "ConfigError",
    "InvalidInput",
    "RuleProblem",
    "CompileError",
    "CapacityError",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "InvalidTransition",
    "PreconditionFailed",
    "TooBusy",
    "StoreUnavailable",
    "PeerUnavailable",
    "DataplaneError",
    "LoadError",
    "AttachError",
    "MapWriteError",
]


class MepError(Exception):
    """Base of every error the platform raises on purpose."""

    http_status = 500
    grpc_code = "INTERNAL"
    title = "Internal error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}" if self.field else self.detail


class ConfigError(MepError):
    title = "Invalid configuration"


class InvalidInput(MepError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    title = "Bad request"


@dataclass(frozen=True)
class RuleProblem:
    """Why one rule cannot be compiled: which app, which rule, which field."""

    app_instance_id: str
    rule_id: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"app {self.app_instance_id} rule {self.rule_id}: {self.field}: {self.message}"


class CompileError(InvalidInput):
    title = "Rule set refused"

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = tuple(problems)
        first = problems[0] if problems else None
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(
            (str(first) if first else "rule set refused") + more,
            field=first.field if first else None,
        )

    def __str__(self) -> str:
        return self.detail


class CapacityError(CompileError):
    grpc_code = "RESOURCE_EXHAUSTED"
    title = "Capacity exceeded"


class Unauthorized(MepError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    title = "Unauthorized"


class Forbidden(MepError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    title = "Forbidden"


class NotFound(MepError):
    http_status = 404
    grpc_code = "NOT_FOUND"
    title = "Not found"


class Conflict(MepError):
    http_status = 409
    grpc_code = "ALREADY_EXISTS"
    title = "Conflict"


class InvalidTransition(Conflict):
    grpc_code = "FAILED_PRECONDITION"
    title = "Not allowed in the current application state"


class PreconditionFailed(MepError):
    http_status = 412
    grpc_code = "FAILED_PRECONDITION"
    title = "Precondition failed"


class TooBusy(MepError):
    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"
    title = "Too busy"


class StoreUnavailable(MepError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
    title = "State store unavailable"


class PeerUnavailable(MepError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
    title = "Peer unavailable"


class DataplaneError(MepError):
    title = "Data plane error"


class LoadError(DataplaneError):
    """The program did not compile or verify; ``detail`` carries the verifier log."""


class AttachError(DataplaneError):
    """No XDP mode could attach; ``detail`` names each mode tried and why it failed."""


class MapWriteError(DataplaneError):
    """A map update failed; the rule set is not (fully) applied."""

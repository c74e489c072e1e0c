"""A typed asyncio client of Mm5, for MEPM, the tests and the benchmark.

Each RPC is a method named as in rpc.METHODS (``apply_configuration``); a
failed call raises the MepError the server raised (same class, detail and
field; CompileError arrives as its base InvalidInput), and a MEP that cannot
be reached (or refuses the TLS handshake) raises PeerUnavailable naming the
target.
"""
from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from ..errors import (
    Conflict,
    DataplaneError,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    MepError,
    NotFound,
    PeerUnavailable,
    PreconditionFailed,
    StoreUnavailable,
    TooBusy,
    Unauthorized,
)
from .rpc import ERROR_METADATA_KEY, FIELD_METADATA_KEY, METHODS, pb

__all__ = ["ClientTls", "Mm5Client", "error_from_rpc"]

R = TypeVar("R", bound=Message)

_DEFAULT_MAX_MESSAGE_BYTES = 4 << 20
# Reconnect quickly: a MEP restarting should be reachable again within a
# second, not after gRPC's default backoff of up to two minutes.
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Errors rebuilt by class name (mep-error metadata); any other class by its status code.
_BY_NAME: dict[str, type[MepError]] = {
    cls.__name__: cls
    for cls in (
        InvalidInput, NotFound, Conflict, InvalidTransition, PreconditionFailed, StoreUnavailable, TooBusy,
        Unauthorized, Forbidden, DataplaneError,
    )
}
# A refused rule set carries its problems in the detail; rebuilt as its base class.
_BY_NAME.update(CompileError=InvalidInput, CapacityError=InvalidInput)
_BY_CODE: dict[grpc.StatusCode, type[MepError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooBusy,
}


@dataclass(frozen=True)
class ClientTls:
    """PEM files for TLS: the CA that signed the MEP's certificate, and this client's certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None  # verify the MEP's certificate for this name instead of the target's host

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials from the files; MepError naming a file that cannot be read."""

        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as exc:
                raise MepError(f"cannot read {path}: {exc.strerror}", field="tls") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca), private_key=read(self.key), certificate_chain=read(self.cert)
        )


def error_from_rpc(target: str, exc: grpc.aio.AioRpcError) -> MepError:
    """The MepError a failed call stands for, with the server's detail and field.

    A status without the ``mep-error`` metadata is gRPC's own (connection
    refused, TLS handshake refused, deadline): PeerUnavailable.
    """
    metadata = {key: str(value) for key, value in exc.trailing_metadata() or ()}
    detail = exc.details() or exc.code().name
    name = metadata.get(ERROR_METADATA_KEY)
    if name is None:
        # gRPC's own detail ends in a long "; last error: ..." chain: keep its first clause.
        return PeerUnavailable(f"MEP {target} does not answer ({exc.code().name}): {detail.split(';')[0]}")
    field = metadata.get(FIELD_METADATA_KEY)
    if field and detail.startswith(f"{field}: "):
        detail = detail[len(field) + 2:]
    cls = _BY_NAME.get(name) or _BY_CODE.get(exc.code(), MepError)
    return cls(detail, field=field)


class Mm5Client:
    """One channel to one MEP. Use as an async context manager, or call ``close()``."""

    def __init__(
        self,
        target: str,
        *,
        tls: ClientTls | None = None,
        timeout_s: float = 10.0,
        max_message_bytes: int = _DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        options = [
            *_CHANNEL_OPTIONS,
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls is not None and tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)

    async def __aenter__(self) -> "Mm5Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; streams in progress end."""
        await self._channel.close()

    async def _call(self, name: str, request: Message, response: type[R], timeout_s: float | None) -> R:
        method = METHODS[name]
        call = self._channel.unary_unary(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        try:
            result = await call(request, timeout=timeout_s or self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(self.target, exc) from None
        assert isinstance(result, response)
        return result

    async def _stream(self, name: str, request: Message, response: type[R]) -> AsyncGenerator[R, None]:
        method = METHODS[name]
        call = self._channel.unary_stream(
            method.path,
            request_serializer=method.request.SerializeToString,
            response_deserializer=method.response.FromString,
        )
        stream = call(request)
        try:
            async for message in stream:
                assert isinstance(message, response)
                yield message
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(self.target, exc) from None
        finally:
            stream.cancel()

    # -- one method per RPC ------------------------------------------------------------------
    async def create_app_instance(self, request: pb.CreateAppInstanceRequest) -> pb.AppInstance:
        """CreateAppInstance."""
        return await self._call("CreateAppInstance", request, pb.AppInstance, None)

    async def instantiate_app_instance(self, app_instance_id: str) -> pb.AppInstance:
        """InstantiateAppInstance."""
        request = pb.AppInstanceRequest(app_instance_id=app_instance_id)
        return await self._call("InstantiateAppInstance", request, pb.AppInstance, None)

    async def terminate_app_instance(self, app_instance_id: str, *, forceful: bool = False) -> pb.AppInstance:
        """TerminateAppInstance, GRACEFUL unless ``forceful``."""
        request = pb.TerminateAppInstanceRequest(
            app_instance_id=app_instance_id, termination_type=pb.FORCEFUL if forceful else pb.GRACEFUL
        )
        return await self._call("TerminateAppInstance", request, pb.AppInstance, None)

    async def delete_app_instance(self, app_instance_id: str) -> pb.DeleteAppInstanceResponse:
        """DeleteAppInstance."""
        request = pb.AppInstanceRequest(app_instance_id=app_instance_id)
        return await self._call("DeleteAppInstance", request, pb.DeleteAppInstanceResponse, None)

    async def apply_configuration(
        self, app_instance_id: str, generation: int, config: pb.AppConfiguration
    ) -> pb.ApplyConfigurationResponse:
        """ApplyConfiguration."""
        request = pb.ApplyConfigurationRequest(app_instance_id=app_instance_id, generation=generation, config=config)
        return await self._call("ApplyConfiguration", request, pb.ApplyConfigurationResponse, None)

    async def get_task(self, task_id: str) -> pb.Task:
        """GetTask."""
        return await self._call("GetTask", pb.TaskRequest(task_id=task_id), pb.Task, None)

    def watch_task(self, task_id: str) -> AsyncGenerator[pb.Task, None]:
        """WatchTask: each state of the task, ending with ACTIVE or REVERTED."""
        return self._stream("WatchTask", pb.TaskRequest(task_id=task_id), pb.Task)

    async def wait_task(self, task_id: str) -> pb.Task:
        """The task's final message (ACTIVE or REVERTED), following WatchTask."""
        last = None
        async for last in self.watch_task(task_id):
            pass
        if last is None:
            raise MepError(f"MEP {self.target} ended WatchTask {task_id} without a message")
        return last

    async def get_state(self, app_instance_id: str = "", *, include_config: bool = False) -> pb.State:
        """GetState."""
        request = pb.GetStateRequest(app_instance_id=app_instance_id, include_config=include_config)
        return await self._call("GetState", request, pb.State, None)

    async def get_counters(self, app_instance_id: str = "") -> pb.Counters:
        """GetCounters."""
        return await self._call("GetCounters", pb.GetCountersRequest(app_instance_id=app_instance_id), pb.Counters, None)

    def watch(self, app_instance_id: str = "") -> AsyncGenerator[pb.Event, None]:
        """Watch: SYNC, then every store event."""
        return self._stream("Watch", pb.WatchRequest(app_instance_id=app_instance_id), pb.Event)

    async def health(self, *, timeout_s: float | None = None) -> pb.HealthResponse:
        """Health."""
        return await self._call("Health", pb.HealthRequest(), pb.HealthResponse, timeout_s)

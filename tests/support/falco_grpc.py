"""A stand-in for Falco's gRPC server (0.35 to 0.43), built from the router's generated bindings.

It behaves like Falco where the router depends on it. Every ``sub`` and ``get`` call pops from one
shared queue. ``sub`` drains the queue after each client message and then waits for the next one.
``get`` streams what is queued and ends with OK. It listens on a unix socket (no authentication, as
Falco does) or on 127.0.0.1 with mutual TLS (client certificate required), and it can be stopped and
started again while its queue keeps the alerts, like Falco's static queue across a restart.
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from router.event import parse_time
from router.priority import parse_priority
from router.proto_gen.falco import outputs_pb2, outputs_pb2_grpc, schema_pb2, version_pb2, version_pb2_grpc
from tests.support.certs import make_pki

FALCO_VERSION = "0.43.1"


def stringify(value: Any) -> str:
    """Return a typed JSON value as Falco 0.35+ puts it in the gRPC map (null becomes "null")."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    # Falco throws on list or object values and does not queue the alert for gRPC.
    raise ValueError(f"output field value {value!r} is not a scalar; Falco would not send this alert over gRPC")


def response_from_alert(alert: dict[str, Any]) -> outputs_pb2.response:
    """Build the gRPC form of a JSON alert the way Falco 0.35+ fills each field."""
    time_ns = parse_time(alert["time"])
    priority = parse_priority(alert["priority"])
    assert priority is not None, f"corpus priority {alert['priority']!r} has no gRPC enum value"
    message = outputs_pb2.response(
        priority=priority.falco_number,  # type: ignore[arg-type]
        rule=alert["rule"],
        output=alert.get("output", ""),
        hostname=alert.get("hostname", ""),
        tags=alert.get("tags", []),
        output_fields={key: stringify(value) for key, value in (alert.get("output_fields") or {}).items()},
    )
    message.time.seconds, message.time.nanos = divmod(time_ns, 1_000_000_000)
    source = alert.get("source")
    if source is not None:
        message.source = source
        # The enum value named like the source, else PLUGIN; an alert without a source (a Falco older
        # than 0.30) keeps the default 0, as an old Falco's SYSCALL does.
        names = schema_pb2.source.keys()
        message.source_deprecated = schema_pb2.source.Value(source) if source in names else schema_pb2.PLUGIN
    return message


class _Outputs(outputs_pb2_grpc.serviceServicer):  # type: ignore[misc]
    def __init__(self, falco: FalcoStandIn) -> None:
        self.falco = falco

    async def sub(
        self, request_iterator: AsyncIterator[outputs_pb2.request], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[outputs_pb2.response]:
        async for _request in request_iterator:
            self.falco.sub_requests += 1
            while self.falco.queue:
                yield self.falco.queue.popleft()

    async def get(
        self, request: outputs_pb2.request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[outputs_pb2.response]:
        self.falco.get_calls += 1
        while self.falco.queue:
            yield self.falco.queue.popleft()


class _Version(version_pb2_grpc.serviceServicer):  # type: ignore[misc]
    async def version(self, request: version_pb2.request, context: grpc.aio.ServicerContext) -> version_pb2.response:
        return version_pb2.response(version=FALCO_VERSION, major=0, minor=43, patch=1)


@dataclass
class TlsFiles:
    """PEM files of a throwaway CA with one server and one client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    pki = make_pki(directory, "falco")
    return TlsFiles(
        ca=pki.ca_cert,
        server_cert=pki.server.cert,
        server_key=pki.server.key,
        client_cert=pki.client.cert,
        client_key=pki.client.key,
    )


class FalcoStandIn:
    """Falco's gRPC outputs and version services over one shared queue."""

    def __init__(self, *, serve_outputs: bool = True) -> None:
        self.queue: collections.deque[outputs_pb2.response] = collections.deque()
        self.serve_outputs = serve_outputs
        self.sub_requests = 0
        self.get_calls = 0
        self._server: grpc.aio.Server | None = None
        self._socket: Path | None = None

    def enqueue(self, alerts: Iterable[outputs_pb2.response]) -> None:
        """Queue alerts as Falco's gRPC output does when rules fire."""
        self.queue.extend(alerts)

    def _new_server(self) -> grpc.aio.Server:
        server = grpc.aio.server()
        if self.serve_outputs:
            outputs_pb2_grpc.add_serviceServicer_to_server(_Outputs(self), server)
            version_pb2_grpc.add_serviceServicer_to_server(_Version(), server)
        return server

    async def start_unix(self, socket_path: Path) -> str:
        """Listen on a unix socket; return the router's address for it."""
        self._server = self._new_server()
        self._socket = socket_path
        self._server.add_insecure_port(f"unix://{socket_path}")
        await self._server.start()
        return f"unix://{socket_path}"

    async def start_tls(self, tls: TlsFiles, port: int = 0) -> int:
        """Listen on 127.0.0.1 with mutual TLS (a client certificate signed by the CA is required)."""
        self._server = self._new_server()
        credentials = grpc.ssl_server_credentials(
            [(tls.server_key.read_bytes(), tls.server_cert.read_bytes())],
            root_certificates=tls.ca.read_bytes(),
            require_client_auth=True,
        )
        bound: int = self._server.add_secure_port(f"127.0.0.1:{port}", credentials)
        await self._server.start()
        return bound

    async def stop(self) -> None:
        """Stop serving and remove the unix socket, as a stopped Falco leaves no socket behind."""
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        if self._socket is not None:
            self._socket.unlink(missing_ok=True)

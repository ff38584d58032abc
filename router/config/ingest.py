"""Config of the two ingest transports: Falco's http_output and Falco's gRPC output stream."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from router.config.base import StrictModel, TlsClientConfig, TlsServerConfig


class HttpIngestConfig(StrictModel):
    """The HTTP listener Falco's ``http_output`` posts to (falcosidekick's contract, port 2801)."""

    enabled: bool = Field(default=True, description="Serve the HTTP ingest.")
    listen: str = Field(
        default="127.0.0.1:2801",
        description="host:port to listen on. Use 0.0.0.0:2801 in a pod that receives from other pods.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body accepted; a larger one gets 413."
    )
    tls: TlsServerConfig | None = Field(default=None, description="Serve HTTPS (and require client certificates).")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_address(value)
        return value


class GrpcIngestConfig(StrictModel):
    """The subscription to Falco's gRPC outputs service (Falco 0.24 to 0.43; removed in 0.44)."""

    enabled: bool = Field(default=False, description="Subscribe to Falco's gRPC output stream.")
    address: str = Field(
        default="unix:///run/falco/falco.sock",
        description=(
            "unix:///path for Falco's unix socket, or host:port for TCP, which Falco serves with mutual TLS only."
        ),
    )
    method: Literal["sub", "get"] = Field(
        default="sub", description="sub: long-lived subscription. get: drain the backlog, then poll."
    )
    poll_interval_s: float = Field(
        default=0.1, gt=0, le=60, description="How often to ask Falco for queued alerts on an idle stream."
    )
    reconnect_initial_s: float = Field(
        default=1.0, gt=0, description="First delay before reconnecting; delays below 1 s are raised to 1 s."
    )
    reconnect_max_s: float = Field(default=30.0, gt=0, description="Largest delay between reconnection attempts.")
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="How long one connection attempt (Falco's version call) may take."
    )
    unavailable_error_after_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "Log one error (Falco 0.44+ has no gRPC) once Falco's socket or port has been unreachable this long."
        ),
    )
    tls: TlsClientConfig | None = Field(default=None, description="Mutual TLS for a TCP address (required by Falco).")

    @model_validator(mode="after")
    def _consistent(self) -> GrpcIngestConfig:
        problems = []
        if self.reconnect_max_s < self.reconnect_initial_s:
            problems.append(
                f"reconnect_max_s ({self.reconnect_max_s}) is smaller than reconnect_initial_s "
                f"({self.reconnect_initial_s}): raise reconnect_max_s"
            )
        if not self.address.startswith("unix:"):
            split_address(self.address)
            # Falco serves TCP with mutual TLS only and has no plaintext TCP option.
            if self.tls is None or self.tls.cert_file is None:
                problems.append(
                    f"address {self.address!r} is TCP, which Falco serves with mutual TLS only: set tls.ca_file, "
                    "tls.cert_file and tls.key_file, or use unix:///run/falco/falco.sock"
                )
            elif not self.tls.verify:
                problems.append(
                    "tls.verify: false is not supported for gRPC: set tls.ca_file to the CA of Falco's certificate"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def split_address(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); raises ``ValueError`` with the expected form."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected host:port such as 127.0.0.1:2801, got {value!r}")
    return host.strip("[]"), int(port_text)

"""Building blocks shared by every config section: closed models, secret references and TLS settings."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """A config section that rejects unknown keys, so a typo is an error and not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SecretRef(StrictModel):
    """Where a secret comes from: an environment variable or a file (a mounted Kubernetes Secret).

    Secrets are never written in the config file itself, so the config can live in a ConfigMap and
    in git, and ``falco-router check`` can print it.
    """

    env: str | None = Field(default=None, description="Name of the environment variable that holds the secret.")
    file: Path | None = Field(default=None, description="Path of a file whose content (stripped) is the secret.")

    @model_validator(mode="before")
    @classmethod
    def _reject_literal(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "a secret must not be written in the config: use {env: VARIABLE_NAME} or {file: /path/to/secret}"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("set exactly one of env or file")
        return self

    def describe(self) -> str:
        """Return where the secret is read from, safe to print."""
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"

    def reveal(self) -> str:
        """Read the secret; raises ``LookupError`` with a message that never contains the secret."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None or not value.strip():
                raise LookupError(f"environment variable {self.env} is not set or empty")
            return value.strip()
        assert self.file is not None
        try:
            value = self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LookupError(f"cannot read secret file {self.file}: {exc.strerror}") from exc
        if not value:
            raise LookupError(f"secret file {self.file} is empty")
        return value


class TlsClientConfig(StrictModel):
    """TLS settings for a connection the router opens (Kafka, webhook, Falco gRPC over TCP)."""

    ca_file: Path | None = Field(default=None, description="PEM bundle of CAs to trust instead of the system store.")
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    key_file: Path | None = Field(default=None, description="Private key (PEM) of the client certificate.")
    verify: bool = Field(default=True, description="Verify the server certificate and host name; false only for tests.")
    server_name: str | None = Field(default=None, description="Host name to verify instead of the one in the address.")

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsClientConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together for mutual TLS: set both or neither")
        return self

    def ssl_context(self) -> Any:
        """Build an ``ssl.SSLContext`` from these settings."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


class TlsServerConfig(StrictModel):
    """TLS settings for the router's own HTTP listener."""

    cert_file: Path = Field(description="Server certificate (PEM).")
    key_file: Path = Field(description="Private key (PEM) of the server certificate.")
    client_ca_file: Path | None = Field(
        default=None, description="When set, clients must present a certificate signed by this CA (mutual TLS)."
    )

    def ssl_context(self) -> Any:
        """Build a server ``ssl.SSLContext``: TLS 1.2 at least, client certificates required when a CA is set."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_ca_file is not None:
            context.load_verify_locations(cafile=str(self.client_ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

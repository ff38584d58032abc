"""Validation of ingest.grpc settings and the reconnection backoff."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from router.config.ingest import GrpcIngestConfig
from router.sources.grpc import MIN_RECONNECT_DELAY_S, Backoff, unix_socket_path


def test_default_address_is_falco_socket() -> None:
    assert GrpcIngestConfig().address == "unix:///run/falco/falco.sock"


def test_tcp_address_without_tls_is_rejected() -> None:
    with pytest.raises(ValidationError, match="mutual TLS only"):
        GrpcIngestConfig(address="127.0.0.1:5060")


def test_tcp_address_without_client_certificate_is_rejected() -> None:
    with pytest.raises(ValidationError, match="mutual TLS only"):
        GrpcIngestConfig.model_validate({"address": "127.0.0.1:5060", "tls": {"ca_file": "/tmp/ca.pem"}})


def test_tcp_address_without_verification_is_rejected() -> None:
    tls = {"cert_file": "/tmp/c.pem", "key_file": "/tmp/c.key", "verify": False}
    with pytest.raises(ValidationError, match="verify: false is not supported"):
        GrpcIngestConfig.model_validate({"address": "127.0.0.1:5060", "tls": tls})


def test_tcp_address_with_client_certificate_is_valid() -> None:
    tls = {"ca_file": "/tmp/ca.pem", "cert_file": "/tmp/c.pem", "key_file": "/tmp/c.key"}
    config = GrpcIngestConfig.model_validate({"address": "127.0.0.1:5060", "tls": tls})
    assert config.tls is not None


def test_reconnect_max_below_initial_is_rejected() -> None:
    with pytest.raises(ValidationError, match="reconnect_max_s"):
        GrpcIngestConfig(reconnect_initial_s=10, reconnect_max_s=5)


@pytest.mark.parametrize(
    ("address", "path"),
    [
        ("unix:///run/falco/falco.sock", "/run/falco/falco.sock"),
        ("unix:falco.sock", "falco.sock"),
        ("127.0.0.1:5060", None),
    ],
)
def test_unix_socket_path_from_address(address: str, path: str | None) -> None:
    assert unix_socket_path(address) == path


@given(
    initial_s=st.floats(min_value=0.01, max_value=10),
    extra_s=st.floats(min_value=0, max_value=100),
    attempts=st.integers(min_value=1, max_value=80),
)
def test_backoff_stays_between_floor_and_cap(initial_s: float, extra_s: float, attempts: int) -> None:
    backoff = Backoff(initial_s, initial_s + extra_s)
    delays = [backoff.next_delay() for _ in range(attempts)]
    assert min(delays) >= MIN_RECONNECT_DELAY_S
    assert max(delays) <= max(MIN_RECONNECT_DELAY_S, initial_s + extra_s)


def test_backoff_reaches_cap_after_failures() -> None:
    backoff = Backoff(1.0, 30.0)
    delays = [backoff.next_delay() for _ in range(10)]
    # Equal jitter: once the exponential term passes the cap, every delay is in [cap / 2, cap].
    assert all(15.0 <= delay <= 30.0 for delay in delays[5:])


def test_backoff_reset_starts_from_initial() -> None:
    backoff = Backoff(2.0, 30.0)
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 2.0

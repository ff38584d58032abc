"""Shared fixtures. Real peers live in tests/support; every server binds 127.0.0.1 only."""

from __future__ import annotations

import pytest

from router.logs import configure_logging
from tests.support.data import SHARED


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    configure_logging("debug", "json")


@pytest.fixture(scope="session")
def shared_dir():  # type: ignore[no-untyped-def]
    if not SHARED.is_dir():
        pytest.fail(f"shared data not found at {SHARED}; set FALCO_ROUTER_SHARED to its path")
    return SHARED

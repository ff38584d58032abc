"""Fixtures for the Kubernetes enrichment tests: a throwaway CA, the fake API server and a kubeconfig."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.fake_kube import FakeKube, TlsFiles, make_tls, write_kubeconfig


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("fake-kube-tls"))


@pytest.fixture
async def fake(tls: TlsFiles) -> AsyncIterator[FakeKube]:
    server = FakeKube(tls)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def kubeconfig(tmp_path: Path, fake: FakeKube, tls: TlsFiles) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", fake.server, tls.ca, token=fake.token)


async def eventually(condition: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    """Wait until ``condition()`` is true; fail naming ``what`` if it never becomes true.

    The limit only stops a hung test: no test asserts on how long anything took.
    """
    try:
        async with asyncio.timeout(limit_s):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"never became true: {what}")

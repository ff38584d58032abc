"""HTTP ingest over TLS and mutual TLS, as Falco's http_output can send (ca_cert, mtls)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest

from router.app import RouterApp
from tests.support.certs import Pki, make_pki
from tests.support.collect import CollectingOutput
from tests.support.data import corpus_lines
from tests.support.router import running_router

TLS_CONFIG = """
ingest:
  http:
    listen: 127.0.0.1:{port}
    tls:
      cert_file: %(cert)s
      key_file: %(key)s
      %(client_ca)s
outputs:
  collect:
    type: stdout
routes:
  - name: everything
    outputs: [collect]
"""


def config(tmp_path: Path, mutual: bool) -> tuple[str, Pki]:
    pki = make_pki(tmp_path)
    client_ca = f"client_ca_file: {pki.ca_cert}" if mutual else ""
    text = TLS_CONFIG % {"cert": pki.server.cert, "key": pki.server.key, "client_ca": client_ca}
    return text, pki


def port_of(app: RouterApp) -> int:
    assert app.http is not None and app.http.port is not None
    return app.http.port


async def post(url: str, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as http, http.post(url, data=corpus_lines()[0], ssl=context) as answer:
        return answer.status


async def test_https_ingest_accepts_alert(tmp_path: Path) -> None:
    text, pki = config(tmp_path, mutual=False)
    collected = CollectingOutput()
    async with running_router(text, {"collect": collected}) as app:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        assert await post(f"https://127.0.0.1:{port_of(app)}/", context) == 200
        await collected.wait_for(1)


async def test_mutual_tls_rejects_client_without_certificate(tmp_path: Path) -> None:
    text, pki = config(tmp_path, mutual=True)
    async with running_router(text, {"collect": CollectingOutput()}) as app:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        with pytest.raises(aiohttp.ClientError):
            await post(f"https://127.0.0.1:{port_of(app)}/", context)


async def test_mutual_tls_accepts_client_certificate(tmp_path: Path) -> None:
    text, pki = config(tmp_path, mutual=True)
    collected = CollectingOutput()
    async with running_router(text, {"collect": collected}) as app:
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
        assert await post(f"https://127.0.0.1:{port_of(app)}/", context) == 200
        await collected.wait_for(1)

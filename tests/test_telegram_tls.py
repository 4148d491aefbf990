"""Every Bot API connection verifies the server's certificate: the process shares one TLS
context between them (``adapters.telegram.common.bot_api_options``), and sharing must not
loosen it. A server on 127.0.0.1 with a self-signed certificate stands in for a machine in
the middle; a bot that trusted it would hand it the token in the first URL."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from telegram.error import NetworkError

from adapters.telegram.common import _verifying_tls, bot_api_request
from adapters.telegram.delivery import http_bot
from adapters.telegram.updates import PollsSeen
from bot.config import TelegramSettings

TOKEN = "123456:TLS-TEST-TOKEN"


def self_signed(cert: Path, key: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)


@pytest.fixture
async def untrusted_server(tmp_path, aiohttp_server):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(self_signed, cert, key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "x",
                                                         "username": "x_bot"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(app, ssl=context)
    return f"https://127.0.0.1:{server.port}", seen


async def test_a_sending_bot_refuses_a_bot_api_server_whose_certificate_is_not_trusted(untrusted_server):
    base, seen = untrusted_server
    bot = http_bot(TelegramSettings(token=TOKEN, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot"))
    with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
        await bot.initialize()  # getMe
    assert seen == []  # no request reached it: the token stayed home


@pytest.mark.parametrize("make", [lambda: bot_api_request(4), PollsSeen], ids=["updates' replies", "getUpdates"])
async def test_the_chat_bots_connections_refuse_an_untrusted_certificate(untrusted_server, make):
    base, seen = untrusted_server
    request = make()
    await request.initialize()
    try:
        with pytest.raises(NetworkError, match="CERTIFICATE_VERIFY_FAILED"):
            await request.post(f"{base}/bot{TOKEN}/getMe")
    finally:
        await request.shutdown()
    assert seen == []


def test_the_sending_bot_loads_no_tls_context_of_its_own(monkeypatch):
    _verifying_tls()  # the process's one, loaded
    made = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: made.append(a or k) or real(*a, **k))
    http_bot(TelegramSettings(token=TOKEN))
    assert made == []


async def test_ssl_cert_file_names_the_roots_a_self_hosted_bot_api_server_is_trusted_by(
        untrusted_server, tmp_path, monkeypatch):
    base, seen = untrusted_server
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))  # as httpx reads it
    _verifying_tls.cache_clear()
    try:
        request = bot_api_request(1)
        await request.initialize()
        try:
            await request.post(f"{base}/bot{TOKEN}/getMe")
        finally:
            await request.shutdown()
    finally:
        _verifying_tls.cache_clear()
    assert seen == [f"/bot{TOKEN}/getMe"]

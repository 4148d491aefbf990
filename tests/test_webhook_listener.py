"""The webhook listener refuses what WaveSpeed did not sign, and hands on what it did."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from bot.webhooks import WebhookListener, job_url, signature, verified

SECRET = "whsec_0123456789abcdef"
PREDICTION = {"id": "task-1", "model": "kwaivgi/kling-effects", "status": "completed",
              "outputs": ["https://example.invalid/v.mp4"], "has_nsfw_contents": [False],
              "created_at": "2026-11-22T10:00:00.000Z", "error": "", "timings": {"inference": 1000}}


def signed(body: bytes, *, webhook_id: str = "msg_1", at: float | None = None,
           secret: str = SECRET) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "content-type": "application/json",
            "webhook-signature": f"v3,{signature(secret, webhook_id, timestamp, body)}"}


@pytest.fixture
async def listener():
    received = []

    async def on_result(job_id, prediction):
        received.append((job_id, prediction))

    server = WebhookListener("127.0.0.1:0", SECRET, on_result)
    await server.start()
    server.received = received
    yield server
    await server.stop()


async def _post(server, body: bytes, headers: dict[str, str], job_id: int = 7) -> int:
    async with aiohttp.ClientSession() as session, session.post(
            job_url(f"http://127.0.0.1:{server.port}", job_id), data=body, headers=headers) as resp:
        return resp.status


async def test_a_signed_delivery_reaches_the_engine_with_its_job(listener):
    body = json.dumps(PREDICTION).encode()
    assert await _post(listener, body, signed(body)) == 200
    [(job_id, prediction)] = listener.received
    assert (job_id, prediction.id, prediction.outputs) == (7, "task-1", PREDICTION["outputs"])


@pytest.mark.parametrize("tamper", ["no headers", "wrong secret", "body changed", "stale", "future",
                                    "other scheme"])
async def test_deliveries_wavespeed_did_not_sign_get_401(listener, tamper):
    body = json.dumps(PREDICTION).encode()
    headers = {
        "no headers": {},
        "wrong secret": signed(body, secret="whsec_not-the-one"),
        "body changed": signed(body.replace(b"task-1", b"task-2")),
        "stale": signed(body, at=time.time() - 301),
        "future": signed(body, at=time.time() + 301),
        "other scheme": {**signed(body), "webhook-signature": signed(body)["webhook-signature"].replace("v3,", "v1,")},
    }[tamper]
    assert await _post(listener, body, headers) == 401
    assert listener.received == []


async def test_duplicates_are_accepted_and_passed_on(listener):
    body = json.dumps(PREDICTION).encode()
    for _ in range(2):  # WaveSpeed retries; the engine acts on a job's result once
        assert await _post(listener, body, signed(body)) == 200
    assert len(listener.received) == 2


def test_signature_is_the_documented_hmac():
    import hashlib
    import hmac
    body = b'{"id":"x"}'
    expected = hmac.new(b"0123456789abcdef", b"msg_9.1700000000." + body, hashlib.sha256).hexdigest()
    assert signature(SECRET, "msg_9", "1700000000", body) == expected
    headers = {"webhook-id": "msg_9", "webhook-timestamp": "1700000000",
               "webhook-signature": f"v1,zzz v3,{expected}"}  # several signatures listed
    assert verified(SECRET, headers, body, now=1700000100)
    assert not verified(SECRET, headers, body, now=1700000400)

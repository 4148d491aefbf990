"""The webhook listener under attack, deliveries that are not the job's, download hosts,
history outages and partial downloads left by a killed process (issue 14, items 9-11, 17-18).

Everything runs over real sockets on loopback: raw connections against the listener, the
engine against the simulator, and small aiohttp servers standing in for other hosts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.config import ConfigError, load_settings
from bot.wavespeed import WaveSpeedClient, WaveSpeedError
from bot.webhooks import MAX_BODY, WebhookListener, job_url, signature
from tests.conftest import API_KEY, effect_request, user
from tests.helpers import image_bytes, settled
from tests.test_webhooks import _free_port

SECRET = "whsec_0123456789abcdef"
PREDICTION = {"id": "task-1", "model": "kwaivgi/kling-effects", "status": "completed",
              "outputs": ["https://example.invalid/v.mp4"], "has_nsfw_contents": [False],
              "created_at": "2026-11-22T10:00:00.000Z", "error": "", "timings": {"inference": 1000}}
EFFECTS_SUBMIT = "/api/v3/kwaivgi/kling-effects"


def signed(body: bytes, *, webhook_id: str = "msg_1", at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {"webhook-id": webhook_id, "webhook-timestamp": timestamp,
            "webhook-signature": f"v3,{signature(SECRET, webhook_id, timestamp, body)}"}


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


def _head(headers: dict[str, str] | list[tuple[str, bytes]], *, length: int | None = None,
          chunked: bool = False) -> bytes:
    """A POST's request line and headers, raw (values may be any bytes)."""
    lines = [b"POST /wavespeed/jobs/7 HTTP/1.1", b"Host: 127.0.0.1", b"Content-Type: application/json"]
    items = headers.items() if isinstance(headers, dict) else headers
    lines += [name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
              for name, value in items]
    if length is not None:
        lines.append(b"Content-Length: %d" % length)
    if chunked:
        lines.append(b"Transfer-Encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _status(reader: asyncio.StreamReader, within: float = 2.0) -> int:
    """The HTTP status the listener answers, which must come ``within`` seconds."""
    async with asyncio.timeout(within):
        line = await reader.readline()
    return int(line.split()[1])


def _closed(reader: asyncio.StreamReader) -> bool:
    return reader.at_eof() or reader.exception() is not None


# --- item 9: headers first, bounded bodies, bounded time, bounded connections -------------

@pytest.mark.parametrize("case", ["no headers", "5000-digit timestamp", "non-ASCII signature",
                                  "short signature", "stale timestamp"])
@pytest.mark.parametrize("body_sent", [False, True], ids=["body never sent", "body sent"])
async def test_bad_signature_headers_answer_401_before_the_body(listener, case, body_sent):
    body = json.dumps(PREDICTION).encode()
    good = signed(body)
    headers: list[tuple[str, bytes]] = {
        "no headers": [],
        "5000-digit timestamp": [("webhook-id", b"msg_1"), ("webhook-timestamp", b"1" * 5000),
                                 ("webhook-signature", good["webhook-signature"].encode())],
        "non-ASCII signature": [("webhook-id", b"msg_1"), ("webhook-timestamp", good["webhook-timestamp"].encode()),
                                ("webhook-signature", b"v3," + "é".encode() * 64)],
        "short signature": [("webhook-id", b"msg_1"), ("webhook-timestamp", good["webhook-timestamp"].encode()),
                            ("webhook-signature", b"v3,abc")],
        "stale timestamp": [(k, v.encode()) for k, v in signed(body, at=time.time() - 600).items()],
    }[case]
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(_head(headers, length=len(body)) + (body if body_sent else b""))
        assert await _status(reader) == 401  # at once, though the body may never come
    finally:
        writer.close()
    assert listener.received == []


async def test_a_body_announced_too_large_answers_413_without_being_read(listener):
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        body = json.dumps(PREDICTION).encode()
        writer.write(_head(signed(body), length=512 * 1024 * 1024) + b"x" * 65536)
        assert await _status(reader) == 413  # only 64 KiB of the 512 MiB were ever sent
        async with asyncio.timeout(2):  # and the listener hangs up instead of draining the rest
            while await reader.read(65536):
                pass
    finally:
        writer.close()


async def test_a_chunked_body_is_cut_off_at_the_limit(listener):
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        body = json.dumps(PREDICTION).encode()
        chunk = b"x" * 65536
        writer.write(_head(signed(body), chunked=True))
        for _ in range(MAX_BODY // len(chunk) + 2):  # over the limit, and the last chunk never comes
            writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        assert await _status(reader) == 413
    finally:
        writer.close()
    assert MAX_BODY <= 256 * 1024  # a prediction object is a few KB


async def test_a_body_sent_slowly_is_cut_off_within_seconds(listener):
    body = json.dumps(PREDICTION).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    started = time.monotonic()
    try:
        writer.write(_head(signed(body), length=len(body)))
        for byte in body:  # a byte every 0.2 s: 80 s for the whole body
            if _closed(reader):
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(0.2)
            if time.monotonic() - started > 12:
                pytest.fail("the listener kept waiting for a dribbled body")
    finally:
        writer.close()
    assert time.monotonic() - started < 8
    assert listener.received == []


async def test_slow_connections_are_dropped_and_a_delivery_still_gets_through(listener):
    """300 connections that dribble their headers: the listener holds a bounded number of
    them, drops every one within seconds, and a real delivery meanwhile is answered."""
    slow = []
    for _ in range(300):
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"POST /wavespeed/jobs/7 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append((reader, writer, time.monotonic()))

    async def dribble() -> None:
        while True:
            for reader, writer, _ in slow:
                if not writer.is_closing() and not _closed(reader):
                    writer.write(b"X-Slow: 1\r\n")
            await asyncio.sleep(0.3)

    dribbler = asyncio.create_task(dribble())
    try:
        await asyncio.sleep(0.6)
        assert sum(not _closed(reader) for reader, _, _ in slow) <= 100  # the rest were refused promptly
        body = json.dumps(PREDICTION).encode()
        async with asyncio.timeout(3), aiohttp.ClientSession() as session, session.post(
                job_url(f"http://127.0.0.1:{listener.port}", 7), data=body, headers=signed(body)) as resp:
            assert resp.status == 200
        assert [job_id for job_id, _ in listener.received] == [7]
        async with asyncio.timeout(12):
            while not all(_closed(reader) for reader, _, _ in slow):
                await asyncio.sleep(0.1)
        assert time.monotonic() - slow[-1][2] < 10  # within a few seconds of connecting
    finally:
        dribbler.cancel()
        for _, writer, _ in slow:
            writer.close()


# --- item 10: a delivery settles a job only when its task can be the job's ----------------

@pytest.fixture
def hooked(settings):
    port = _free_port()
    return settings.with_wavespeed(webhook_url=f"http://127.0.0.1:{port}", webhook_listen=f"127.0.0.1:{port}",
                                   request_timeout=1.0)


async def _post_event(simulator, url: str, event: dict) -> int:
    body = json.dumps(event).encode()
    stamp = int(time.time())
    async with aiohttp.ClientSession() as session, session.post(url, data=body, headers={
            "webhook-id": "msg_replayed", "webhook-timestamp": str(stamp),
            "webhook-signature": simulator.sign("msg_replayed", stamp, body)}) as resp:
        return resp.status


async def _other_clients_task(simulator, model_path: str, inputs: dict) -> str:
    async with aiohttp.ClientSession() as session, session.post(
            f"{simulator.base_url}{model_path}", json=inputs,
            headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
        return (await resp.json())["data"]["id"]


@pytest.mark.parametrize("replayed", ["another job's task", "another model's task", "a task from before"])
async def test_a_delivery_of_another_task_does_not_settle_an_unconfirmed_job(make_engine, hooked, courier,
                                                                             simulator, replayed):
    engine = await make_engine(hooked)
    first = await engine.accept(effect_request(who=user(2)))
    assert (await courier.outcome(first.job.id))[0] == "delivered"
    first_job = await settled(engine, first.job.id)
    [delivery] = [w for w in simulator.webhooks_sent if w["body"]["id"] == first_job.prediction_id]
    event = delivery["body"]  # exactly what WaveSpeed sent for job A, signed afresh
    if replayed == "another model's task":
        image = "data:image/jpeg;base64," + base64.b64encode(image_bytes()).decode()
        task = await _other_clients_task(simulator, "/api/v3/kwaivgi/kling-v1.6-i2v-standard",
                                         {"image": image, "prompt": "a cat"})
        event = {**event, "id": task, "model": "kwaivgi/kling-v1.6-i2v-standard"}
    elif replayed == "a task from before":
        image = "data:image/jpeg;base64," + base64.b64encode(image_bytes()).decode()
        task = await _other_clients_task(simulator, EFFECTS_SUBMIT, {"image": image, "effect_scene": "squish"})
        event = {**event, "id": task, "created_at": "2020-01-01T00:00:00.000Z"}

    simulator.job_seconds = 3.0  # job B's own task ends (and reports) well after the replay
    simulator.fail_next("submit", kind="accept_hang", delay=3.0)  # job B's submit goes unanswered
    second = await engine.accept(effect_request())
    async with asyncio.timeout(10):
        while (job := await engine.store.job(second.job.id)).submit_ended_at is None:
            await asyncio.sleep(0.02)
    assert job.prediction_id is None
    assert await _post_event(simulator, job_url(hooked.wavespeed.webhook_url, second.job.id), event) == 200

    outcome, video = await courier.outcome(second.job.id)
    assert outcome == "delivered"  # not failed and refunded: its own task ran
    own = await settled(engine, second.job.id)
    assert own.state.value == "done" and own.prediction_id not in (first_job.prediction_id, event["id"])
    assert video == simulator.tasks[own.prediction_id].video
    assert (await engine.balance(user())).total == 9


# --- item 11: downloads only from WaveSpeed's hosts ----------------------------------------

class Recorder:
    """A small server on a loopback address that records every request it gets."""

    def __init__(self, host: str, routes: dict[str, web.Response] | None = None):
        self.host = host
        self.routes = routes or {}
        self.requests: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _any(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"path": request.path, "headers": dict(request.headers)})
        if request.path in self.routes:
            return self.routes[request.path]()
        return web.Response(body=b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 1000, content_type="video/mp4")

    async def start(self) -> Recorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, 0)
        await site.start()
        self.url = f"http://{self.host}:{self.runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


@pytest.fixture
async def elsewhere():
    server = await Recorder("127.0.0.2").start()
    yield server
    await server.close()


async def test_an_output_on_another_host_is_not_fetched_and_the_job_still_delivers(make_engine, hooked, courier,
                                                                                  simulator, elsewhere):
    engine = await make_engine(hooked.with_wavespeed(request_timeout=5.0))
    simulator.fail_next("webhook", kind="drop")  # the real delivery is lost; one naming elsewhere arrives
    answer = await engine.accept(effect_request())
    async with asyncio.timeout(10):
        while not (job := await engine.store.job(answer.job.id)).prediction_id:
            await asyncio.sleep(0.02)
    event = {"id": job.prediction_id, "model": job.model_id, "status": "completed",
             "outputs": [f"{elsewhere.url}/steal.mp4"], "has_nsfw_contents": [False]}
    assert await _post_event(simulator, job_url(hooked.wavespeed.webhook_url, answer.job.id), event) == 200
    outcome, video = await courier.outcome(answer.job.id, timeout=30)
    assert outcome == "delivered"  # the refused address was asked for afresh: WaveSpeed's own
    assert video == simulator.tasks[job.prediction_id].video
    assert elsewhere.requests == []


@pytest.mark.parametrize("hops", [1, 2])
async def test_a_redirect_to_another_host_is_not_followed_and_gets_no_key(tmp_path, elsewhere, hops):
    api = Recorder("127.0.0.1")
    await api.start()
    try:
        target = f"{elsewhere.url}/steal.mp4"
        api.routes = {
            "/outputs/a.mp4": lambda: _redirect("/outputs/b.mp4" if hops == 2 else target),
            "/outputs/b.mp4": lambda: _redirect(target),
        }
        client = WaveSpeedClient(api.url, API_KEY)
        try:
            with pytest.raises(WaveSpeedError):
                await client.download(f"{api.url}/outputs/a.mp4", tmp_path / "v.mp4")
            assert await client.download(f"{api.url}/outputs/ok.mp4", tmp_path / "ok.mp4") > 0
        finally:
            await client.close()
        assert elsewhere.requests == []
        assert not (tmp_path / "v.mp4").exists()
        assert [r["path"] for r in api.requests] == ["/outputs/a.mp4", *(["/outputs/b.mp4"] * (hops - 1)),
                                                      "/outputs/ok.mp4"]
    finally:
        await api.close()


@pytest.mark.parametrize("url, ok", [
    ("https://d1q70pf5vjeyhc.cloudfront.net/predictions/abc/1.mp4", True),
    ("https://static.wavespeed.ai/x.mp4", True),
    ("http://d1q70pf5vjeyhc.cloudfront.net/predictions/abc/1.mp4", False),  # not https
    ("https://evil.cloudfront.net/x.mp4", False),
    ("https://wavespeed.ai.evil.com/x.mp4", False),
    ("https://user@static.wavespeed.ai/x.mp4", False),
    ("http://127.0.0.2/x.mp4", False),
    ("http://169.254.169.254/latest/meta-data", False),
    ("file:///etc/passwd", False),
])
async def test_default_download_hosts_are_wavespeeds(url, ok):
    settings = load_settings(None, env={})
    client = WaveSpeedClient(settings.wavespeed.base_url, API_KEY, download_hosts=settings.wavespeed.download_hosts)
    try:
        assert client.may_download(url) is ok
    finally:
        await client.close()


def test_download_hosts_are_configurable(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[wavespeed]\ndownload_hosts = ["cdn.example.com", "*.example.org"]\n')
    assert load_settings(config, env={}).wavespeed.download_hosts == ["cdn.example.com", "*.example.org"]
    config.write_text('[wavespeed]\ndownload_hosts = ["https://cdn.example.com/"]\n')
    with pytest.raises(ConfigError, match="download_hosts"):
        load_settings(config, env={})


# --- item 17: an unreadable history is asked again on a backoff -----------------------------

async def test_an_unreadable_history_is_asked_again_on_a_backoff(make_engine, settings, courier, simulator):
    engine = await make_engine(settings.with_wavespeed(job_timeout=6.0))
    simulator.fail_next("submit", kind="accept_drop")  # the task exists; its answer is lost
    simulator.fail_next("history", 500, 5000, times=100000)  # and the history stays unreadable
    started = time.monotonic()
    answer = await engine.accept(effect_request())
    outcome, reason = await courier.outcome(answer.job.id, timeout=20)
    history = [r for r in simulator.requests if r["path"] == "/api/v3/predictions"]
    assert len(history) <= 30, f"{len(history)} history requests in {time.monotonic() - started:.1f}s"
    assert outcome == "failed"  # settled as documented once the job's time ran out
    assert time.monotonic() - started < 12
    assert (await engine.balance(user())).total == 10


# --- item 18: partial downloads of dead processes are swept at start ------------------------

async def test_partial_downloads_of_dead_processes_are_swept_at_start(make_engine, settings):
    engine = await make_engine(start=False)
    now = time.time()
    ids = []
    for _ in range(3):
        answer = await engine.accept(effect_request(who=user(len(ids) + 1)))
        ids.append(answer.job.id)
    dead, live, gone = ids
    for job_id, state, owner, lease_until in ((dead, "downloading", "host:1:deadbeef", now - 60),
                                              (live, "downloading", "host:2:cafe0001", now + 600),
                                              (gone, "failed", "host:2:cafe0001", now + 600)):
        engine.store.db.execute("update jobs set state = ?, owner = ?, lease_until = ? where id = ?",
                                [state, owner, lease_until, job_id])
    videos = Path(settings.storage.videos_dir)
    videos.mkdir(parents=True, exist_ok=True)
    stale = videos / f"job-{dead}-deadbeef.mp4.part"
    in_progress = videos / f"job-{live}-cafe0001.mp4.part"
    left_over = videos / f"job-{gone}-cafe0001.mp4.part"
    not_its_owner = videos / f"job-{live}-deadbeef.mp4.part"
    downloaded = videos / f"job-{dead}-deadbeef.mp4"  # a finished download is delivered by the next owner
    for path in (stale, in_progress, left_over, not_its_owner, downloaded):
        path.write_bytes(b"partial video")
    await engine.start(resume=False)
    assert sorted(p.name for p in videos.iterdir()) == sorted([in_progress.name, downloaded.name])

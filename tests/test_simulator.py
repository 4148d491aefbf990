"""The WaveSpeed simulator: what a client sees from each fault, and the history endpoint."""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import itertools
import json
import re
import socket
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web

from bot.devtools.simulator import Simulator
from tests.conftest import API_KEY
from tests.helpers import image_bytes

EFFECTS = "kwaivgi/kling-effects"
I2V = "kwaivgi/kling-v1.6-i2v-standard"
PHOTO = "data:image/jpeg;base64," + base64.b64encode(image_bytes()).decode()
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ITEM_KEYS = {"id", "model", "outputs", "urls", "has_nsfw_contents", "status", "created_at", "error", "timings"}


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def _inputs(model: str = EFFECTS) -> dict:
    return {"effect_scene": "hula", "image": PHOTO} if model == EFFECTS else {"image": PHOTO, "prompt": "waves"}


async def _submit(http, sim, model: str = EFFECTS, timeout: float | None = None) -> tuple[int, bytes]:
    kw = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {}
    async with http.post(f"{sim.base_url}/api/v3/{model}", json=_inputs(model), **kw) as resp:
        return resp.status, await resp.read()


async def _submitted(http, sim, model: str = EFFECTS) -> dict:
    status, body = await _submit(http, sim, model)
    assert status == 200
    return json.loads(body)["data"]


async def _history(http, sim, **body) -> tuple[int, dict]:
    async with http.post(f"{sim.base_url}/api/v3/predictions", json=body) as resp:
        return resp.status, await resp.json()


async def _history_items(http, sim, **body) -> list[dict]:
    status, answer = await _history(http, sim, **body)
    assert status == 200 and answer["code"] == 200, answer
    return answer["data"]["items"]


async def _result(http, sim, task_id: str) -> tuple[int, bytes]:
    async with http.get(f"{sim.base_url}/api/v3/predictions/{task_id}/result") as resp:
        return resp.status, await resp.read()


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- history -------------------------------------------------------------------


async def test_history_lists_the_tasks_newest_first_with_their_real_creation_time(http, simulator):
    before = datetime.now(UTC).replace(microsecond=0)
    first = await _submitted(http, simulator)
    second = await _submitted(http, simulator, I2V)
    status, answer = await _history(http, simulator)
    assert status == 200 and answer["code"] == 200 and answer["message"] == "success"
    data = answer["data"]
    assert (data["page"], data["page_size"], data["total"]) == (1, 20, 2)
    assert [item["id"] for item in data["items"]] == [second["id"], first["id"]]
    for item in data["items"]:
        assert set(item) == ITEM_KEYS  # no inputs
        assert ISO_MS.match(item["created_at"])
        created = datetime.fromisoformat(item["created_at"])
        assert before <= created <= datetime.now(UTC)
        assert item["urls"]["get"] == f"{simulator.base_url}/api/v3/predictions/{item['id']}/result"
    # the submit answer, the result and the history all carry the same created_at
    await asyncio.sleep(0.01)
    status, body = await _result(http, simulator, first["id"])
    assert json.loads(body)["data"]["created_at"] == first["created_at"] == data["items"][1]["created_at"]
    assert data["items"][0]["created_at"] == second["created_at"]
    assert {"method": "POST", "path": "/api/v3/predictions"}.items() <= simulator.requests[-2].items()


async def test_history_filters_by_model_status_time_and_pages(http, simulator):
    simulator.job_seconds = 60  # nothing completes during the test
    old = await _submitted(http, simulator)
    await asyncio.sleep(0.01)
    mark = _iso(datetime.now(UTC))
    await asyncio.sleep(0.01)
    new_effect = await _submitted(http, simulator)
    new_i2v = await _submitted(http, simulator, I2V)
    ancient = await _submitted(http, simulator)
    simulator.tasks[ancient["id"]].created_wall -= 8 * 86400  # beyond the 7 days kept

    ids = [item["id"] for item in await _history_items(http, simulator)]
    assert ids == [new_i2v["id"], new_effect["id"], old["id"]]
    after = [item["id"] for item in await _history_items(http, simulator, created_after=mark)]
    assert after == [new_i2v["id"], new_effect["id"]]  # the task created before the mark is not listed
    before = [item["id"] for item in await _history_items(http, simulator, created_before=mark)]
    assert before == [old["id"]]
    by_model = await _history_items(http, simulator, model=EFFECTS, created_after=mark)
    assert [item["id"] for item in by_model] == [new_effect["id"]]
    assert await _history_items(http, simulator, status="completed") == []
    assert len(await _history_items(http, simulator, status="created")) == 3

    status, answer = await _history(http, simulator, page=2, page_size=1)
    assert answer["data"]["total"] == 3 and answer["data"]["page"] == 2
    assert [item["id"] for item in answer["data"]["items"]] == [new_effect["id"]]
    # seven-days-old timestamps without a zone are read as UTC
    week_ago = (datetime.now(UTC) - timedelta(days=7)).replace(tzinfo=None).isoformat()
    assert len(await _history_items(http, simulator, created_after=week_ago)) == 3


@pytest.mark.parametrize("body", [{"page_size": 0}, {"page_size": 101}, {"page_size": "20"}, {"page": 0},
                                  {"created_after": "yesterday"}, {"created_before": 1700000000}])
async def test_history_refuses_invalid_requests(http, simulator, body):
    status, answer = await _history(http, simulator, **body)
    assert status == 400 and answer["code"] == 1401 and answer["data"] is None


async def test_history_needs_the_api_key(simulator):
    async with aiohttp.ClientSession() as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with anonymous.post(f"{simulator.base_url}/api/v3/predictions", json={},
                                      headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["code"] == 401


async def test_history_is_not_served_tasks_older_than_a_week_even_by_time_filter(http, simulator):
    task = await _submitted(http, simulator)
    simulator.tasks[task["id"]].created_wall -= 7 * 86400 + 1
    assert await _history_items(http, simulator, created_after="2000-01-01T00:00:00Z") == []


# --- submit faults -------------------------------------------------------------


async def test_submit_reset_drops_the_connection_and_creates_no_task(http, simulator):
    simulator.fail_next("submit", kind="reset")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _submit(http, simulator)
    assert simulator.submissions == [] and simulator.tasks == {}
    assert await _history_items(http, simulator) == []
    assert simulator.faults_served == [("submit", "reset")]


async def test_submit_accept_drop_creates_the_task_but_never_answers(http, simulator):
    simulator.fail_next("submit", kind="accept_drop")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _submit(http, simulator)
    assert len(simulator.submissions) == 1
    [item] = await _history_items(http, simulator)
    assert item["model"] == EFFECTS and item["id"] in simulator.tasks
    status, body = await _result(http, simulator, item["id"])
    assert status == 200 and json.loads(body)["data"]["id"] == item["id"]


async def test_submit_malformed_answer_after_the_task_was_created(http, simulator):
    simulator.fail_next("submit", kind="malformed")
    status, body = await _submit(http, simulator)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    assert len(simulator.submissions) == 1
    assert len(await _history_items(http, simulator)) == 1


async def test_submit_accept_hang_outlasts_the_client_while_the_task_exists(http, simulator):
    simulator.fail_next("submit", kind="accept_hang", delay=5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await _submit(http, simulator, timeout=0.2)
    assert time.monotonic() - started < 1
    assert len(simulator.submissions) == 1
    assert len(await _history_items(http, simulator)) == 1
    # a patient client gets the normal answer once the hang is over
    simulator.fail_next("submit", kind="accept_hang", delay=0.2)
    started = time.monotonic()
    status, body = await _submit(http, simulator)
    assert status == 200 and time.monotonic() - started >= 0.2
    assert json.loads(body)["data"]["id"] in simulator.tasks
    assert simulator.faults_served == [("submit", "accept_hang")] * 2


async def test_submit_status_faults_keep_their_envelope_and_retry_after(http, simulator):
    simulator.fail_next("submit", 429, 429, retry_after=1, message="too many requests")
    async with http.post(f"{simulator.base_url}/api/v3/{EFFECTS}", json=_inputs()) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert await resp.json() == {"code": 429, "message": "too many requests", "data": None}
    simulator.fail_next("submit", 503, 5003)
    status, body = await _submit(http, simulator)
    assert status == 503 and json.loads(body)["code"] == 5003
    assert simulator.submissions == []
    assert simulator.faults_served == [("submit", "429"), ("submit", "503")]


# --- result, output, upload and history faults -----------------------------------


async def test_result_reset_is_a_disconnect_once_the_client_retry_is_used_up(http, simulator):
    task = await _submitted(http, simulator)
    simulator.fail_next("result", kind="reset")  # aiohttp retries an idempotent GET once by itself
    status, _ = await _result(http, simulator, task["id"])
    assert status == 200
    simulator.fail_next("result", kind="reset", times=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _result(http, simulator, task["id"])
    assert simulator.faults_served == [("result", "reset")] * 3
    assert task["id"] in simulator.tasks


async def test_result_malformed_and_slow(http, simulator):
    task = await _submitted(http, simulator)
    simulator.fail_next("result", kind="malformed")
    status, body = await _result(http, simulator, task["id"])
    assert status == 200 and body.startswith(b'{"code": 200')
    with pytest.raises(ValueError):
        json.loads(body)
    simulator.fail_next("result", 0, delay=0.5)
    with pytest.raises(TimeoutError):
        async with http.get(f"{simulator.base_url}/api/v3/predictions/{task['id']}/result",
                            timeout=aiohttp.ClientTimeout(total=0.1)) as resp:
            await resp.read()
    assert simulator.faults_served == [("result", "malformed"), ("result", "slow")]


async def test_result_without_outputs_waits_for_completion_and_happens_once(http, simulator):
    simulator.job_seconds = 0.2
    task = await _submitted(http, simulator)
    simulator.fail_next("result", kind="no_outputs")
    status, body = await _result(http, simulator, task["id"])
    assert json.loads(body)["data"]["status"] != "completed"
    assert simulator.faults_served == []  # still pending: only a completed task can show it
    await asyncio.sleep(0.25)
    status, body = await _result(http, simulator, task["id"])
    data = json.loads(body)["data"]
    assert (data["status"], data["outputs"], data["has_nsfw_contents"]) == ("completed", [], [])
    status, body = await _result(http, simulator, task["id"])
    assert json.loads(body)["data"]["outputs"] == [f"{simulator.base_url}/outputs/{task['id']}.mp4"]
    assert simulator.faults_served == [("result", "no_outputs")]


async def test_output_stall_sends_part_of_the_video_then_hangs(http, simulator):
    simulator.job_seconds = 0
    task = await _submitted(http, simulator)
    url = f"{simulator.base_url}/outputs/{task['id']}.mp4"
    async with http.get(url) as resp:  # from history or result alike, the output URL works
        full = await resp.read()
    simulator.fail_next("output", kind="stall", delay=5)
    received = b""
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
            assert resp.status == 200 and resp.content_length == len(full)
            async for chunk in resp.content.iter_any():
                received += chunk
    assert 0 < len(received) < len(full) and full.startswith(received)
    assert time.monotonic() - started < 1
    simulator.fail_next("output", kind="stall", delay=0.1)  # a patient client sees the body cut off
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(url) as resp:
            await resp.read()


async def test_upload_and_history_faults(http, simulator):
    simulator.fail_next("upload", kind="reset")
    form = aiohttp.FormData()
    form.add_field("file", image_bytes(), filename="photo.jpg", content_type="image/jpeg")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(f"{simulator.base_url}/api/v3/media/upload/binary", data=form) as resp:
            await resp.read()
    assert simulator.uploads == {}
    simulator.fail_next("history", 503, 5003)
    status, answer = await _history(http, simulator)
    assert status == 503 and answer["code"] == 5003
    simulator.fail_next("history", kind="reset")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await _history(http, simulator)
    assert simulator.faults_served == [("upload", "reset"), ("history", "503"), ("history", "reset")]


@pytest.mark.parametrize("endpoint, kind", [("result", "accept_drop"), ("output", "accept_hang"),
                                            ("submit", "stall"), ("submit", "no_outputs"), ("history", "boom"),
                                            ("webhook", "status"), ("webhook", "reset"), ("submit", "drop"),
                                            ("result", "duplicate"), ("hooks", "drop")])
def test_fault_kinds_only_where_they_make_sense(endpoint, kind):
    with pytest.raises(ValueError):
        Simulator().fail_next(endpoint, kind=kind)


async def test_control_endpoint_scripts_the_new_faults(http, simulator):
    async def control(body):
        async with http.post(f"{simulator.base_url}/_sim/control", json=body) as resp:
            return resp.status

    assert await control({"fail_next": {"endpoint": "submit", "kind": "accept_hang", "delay": 5}}) == 200
    assert await control({"fault_rate": 0.3, "seed": 1}) == 200
    assert await control({"slow_seconds": 2}) == 200
    assert await control({"fail_next": {"endpoint": "output", "kind": "accept_drop"}}) == 400
    assert simulator.fault_rate == 0.3 and simulator.slow_seconds == 2
    [fault] = simulator.faults["submit"]
    assert (fault.kind, fault.delay) == ("accept_hang", 5)
    simulator.fault_rate = 0
    with pytest.raises(TimeoutError):
        await _submit(http, simulator, timeout=0.2)
    async with http.get(f"{simulator.base_url}/_sim/state") as resp:
        state = await resp.json()
    assert state["faults_served"] == [["submit", "accept_hang"]]
    assert len(state["submissions"]) == 1


# --- random faults ---------------------------------------------------------------

TRANSIENT = {
    "submit": {"500", "502", "503", "429", "reset", "malformed", "accept_drop", "accept_hang"},
    "result": {"500", "502", "503", "429", "reset", "malformed", "slow", "no_outputs"},
    "upload": {"500", "503", "429", "reset"},
    "output": {"404", "500", "reset", "stall"},
    "history": {"500", "503", "429", "reset"},
}


def _endpoint(path: str) -> str | None:
    if path == "/api/v3/predictions":
        return "history"
    if path.endswith("/result"):
        return "result"
    if path.startswith("/outputs/"):
        return "output"
    if path == "/api/v3/media/upload/binary":
        return "upload"
    return "submit" if path.startswith("/api/v3/kwaivgi/") else None


async def test_random_faults_come_at_the_asked_rate_and_are_transient():
    sim = Simulator(job_seconds=0, api_key=API_KEY, video_seconds=0.2, fault_rate=0.3, seed=7)
    sim.slow_seconds = 0.05
    base = await sim.start()
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"},
                                         timeout=timeout) as http:
            async def attempt(method, path, **kw):
                try:
                    async with http.request(method, base + path, **kw) as resp:
                        await resp.read()
                except (aiohttp.ClientError, TimeoutError):
                    pass

            sim.fault_rate = 0
            task = await _submitted(http, sim)
            sim.fault_rate = 0.3
            for _ in range(40):
                await attempt("POST", f"/api/v3/{EFFECTS}", json=_inputs())
                await attempt("GET", f"/api/v3/predictions/{task['id']}/result")
                await attempt("GET", f"/outputs/{task['id']}.mp4")
                form = aiohttp.FormData()
                form.add_field("file", b"abc", filename="a.png", content_type="image/png")
                await attempt("POST", "/api/v3/media/upload/binary", data=form)
                await attempt("POST", "/api/v3/predictions", json={})
    finally:
        await sim.close()
    served = collections.Counter(endpoint for endpoint, _ in sim.faults_served)
    calls = collections.Counter(e for r in sim.requests if (e := _endpoint(r["path"])))
    assert 0.2 < sum(served.values()) / sum(calls.values()) < 0.4
    assert set(served) == set(TRANSIENT)
    for endpoint, label in sim.faults_served:
        assert label in TRANSIENT[endpoint], (endpoint, label)
    # tasks exist exactly for the submits that got through or broke only after creating them
    no_task = {"500", "502", "503", "429", "reset"}
    refused = sum(1 for e, label in sim.faults_served if e == "submit" and label in no_task)
    assert len(sim.submissions) == calls["submit"] - refused


async def test_scripted_faults_come_before_random_ones(http):
    sim = Simulator(job_seconds=0, api_key=API_KEY, fault_rate=1.0, seed=3)
    base = await sim.start()
    try:
        sim.fail_next("history", 418, 418)
        async with http.post(f"{base}/api/v3/predictions", json={}) as resp:
            assert resp.status == 418
        for _ in range(5):  # then every call gets a random fault
            try:
                async with http.post(f"{base}/api/v3/predictions", json={}) as resp:
                    assert resp.status in {429, 500, 503}
            except aiohttp.ServerDisconnectedError:
                pass
    finally:
        await sim.close()
    assert sim.faults_served[0] == ("history", "418")
    assert len(sim.faults_served) == 6
    assert all(label in TRANSIENT["history"] for _, label in sim.faults_served[1:])


# --- webhooks --------------------------------------------------------------------


class Receiver:
    """A webhook endpoint on 127.0.0.1: records each delivery, answers ``statuses`` in turn, then 200."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.calls: list[dict] = []  # headers (lower-case names), body (raw bytes), time (monotonic)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append({"headers": {k.lower(): v for k, v in request.headers.items()},
                           "body": body, "time": time.monotonic()})
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        """The deliveries once there are ``count``; then none more may arrive for a moment."""
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {count} deliveries arrived"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert len(self.calls) == count, "more deliveries than expected"
        return self.calls


@pytest.fixture
async def receiver():
    hook = Receiver()
    await hook.start()
    yield hook
    await hook.close()


async def _secret(http, sim) -> str:
    async with http.get(f"{sim.base_url}/api/v3/webhook/secret") as resp:
        answer = await resp.json()
    assert resp.status == 200 and answer["code"] == 200 and answer["message"] == "success", answer
    return answer["data"]["secret"]


def _verified(secret: str, headers: dict, body: bytes) -> bool:
    """WaveSpeed's scheme, computed here independently of the simulator."""
    key = secret.removeprefix("whsec_").encode()
    message = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = hmac.new(key, message, hashlib.sha256).hexdigest()
    version, _, given = headers["webhook-signature"].partition(",")
    return version == "v3" and hmac.compare_digest(expected, given)


async def _submit_with_webhook(http, sim, url: str) -> dict:
    async with http.post(f"{sim.base_url}/api/v3/{EFFECTS}", params={"webhook": url}, json=_inputs()) as resp:
        answer = await resp.json()
    assert resp.status == 200, answer
    return answer["data"]


async def test_webhook_brings_the_signed_prediction_when_the_task_ends_unpolled(http, simulator, receiver):
    task = await _submit_with_webhook(http, simulator, receiver.url)
    [call] = await receiver.wait_for(1)
    assert call["time"] - simulator.tasks[task["id"]].created >= simulator.job_seconds
    assert [r["path"] for r in simulator.requests] == [f"/api/v3/{EFFECTS}?webhook={receiver.url}"]  # no polling
    assert simulator.tasks[task["id"]].video is not None  # rendered before it was announced
    headers, body = call["headers"], call["body"]
    assert headers["content-type"] == "application/json"
    assert _verified(await _secret(http, simulator), headers, body)
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert simulator.sign(headers["webhook-id"], int(headers["webhook-timestamp"]), body) \
        == headers["webhook-signature"]
    event = json.loads(body)
    assert set(event) == ITEM_KEYS and (event["id"], event["status"]) == (task["id"], "completed")
    assert event["outputs"] == [f"{simulator.base_url}/outputs/{task['id']}.mp4"]
    assert event["has_nsfw_contents"] == [False] and event["timings"]["inference"] > 0
    _, result = await _result(http, simulator, task["id"])
    assert json.loads(result)["data"] == event  # the very object a result call shows
    async with http.get(event["outputs"][0]) as resp:
        assert resp.status == 200 and resp.content_type == "video/mp4"
    [sent] = simulator.webhooks_sent
    assert (sent["url"], sent["webhook_id"], sent["status"], sent["body"]) == \
        (receiver.url, headers["webhook-id"], 200, event)
    assert sent["timestamp"] == int(headers["webhook-timestamp"]) and sent["time"] <= call["time"]


async def test_webhook_reports_failed_tasks_and_never_stuck_ones(http, simulator, receiver):
    simulator.plan_outcome("stuck")
    simulator.plan_outcome("failed")
    stuck = await _submit_with_webhook(http, simulator, receiver.url)
    failed = await _submit_with_webhook(http, simulator, receiver.url)
    await asyncio.sleep(simulator.job_seconds)
    [call] = await receiver.wait_for(1)
    event = json.loads(call["body"])
    assert (event["id"], event["status"], event["outputs"]) == (failed["id"], "failed", [])
    assert event["error"] and event["id"] != stuck["id"]


async def test_webhook_is_retried_up_to_three_times_with_one_id(http, simulator, receiver):
    receiver.statuses = [500] * 5
    await _submit_with_webhook(http, simulator, receiver.url)
    calls = await receiver.wait_for(3)
    assert len({call["headers"]["webhook-id"] for call in calls}) == 1
    secret = simulator.webhook_secret
    assert all(_verified(secret, call["headers"], call["body"]) for call in calls)
    gaps = [later["time"] - earlier["time"] for earlier, later in itertools.pairwise(calls)]
    assert gaps[0] >= 0.19 and gaps[1] >= 0.49  # webhook_retry_delays (0.2, 0.5)
    assert [sent["status"] for sent in simulator.webhooks_sent] == [500, 500, 500]
    receiver.statuses = [503]  # a receiver that recovers gets the event on the second try
    await _submit_with_webhook(http, simulator, receiver.url)
    calls = await receiver.wait_for(5)
    assert calls[3]["headers"]["webhook-id"] == calls[4]["headers"]["webhook-id"] != calls[0]["headers"]["webhook-id"]
    assert [sent["status"] for sent in simulator.webhooks_sent[3:]] == [503, 200]


async def test_webhook_to_an_unreachable_receiver_is_tried_three_times(http, simulator):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens there once closed
    simulator.webhook_retry_delays = (0.05, 0.05)
    await _submit_with_webhook(http, simulator, f"http://127.0.0.1:{port}/hook")
    deadline = time.monotonic() + 5
    while len(simulator.webhooks_sent) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    assert [sent["status"] for sent in simulator.webhooks_sent] == [None, None, None]
    assert len({sent["webhook_id"] for sent in simulator.webhooks_sent}) == 1


@pytest.mark.parametrize("kind", ["drop", "duplicate", "bad_signature", "stale"])
async def test_webhook_faults_break_the_next_event_only(http, simulator, receiver, kind):
    secret = await _secret(http, simulator)
    simulator.fail_next("webhook", kind=kind)
    first = await _submit_with_webhook(http, simulator, receiver.url)
    await asyncio.sleep(0.05)  # it ends first, so it is the next event
    second = await _submit_with_webhook(http, simulator, receiver.url)
    calls = await receiver.wait_for({"drop": 1, "duplicate": 3}.get(kind, 2))
    of_first = [c for c in calls if json.loads(c["body"])["id"] == first["id"]]
    [of_second] = [c for c in calls if json.loads(c["body"])["id"] == second["id"]]
    assert _verified(secret, of_second["headers"], of_second["body"])  # the next event is whole again
    assert abs(int(of_second["headers"]["webhook-timestamp"]) - time.time()) < 5
    assert simulator.faults_served == [("webhook", kind)]
    if kind == "drop":
        assert of_first == [] and len(simulator.webhooks_sent) == 1
    elif kind == "duplicate":
        assert len(of_first) == 2 and of_first[0]["body"] == of_first[1]["body"]
        assert of_first[0]["headers"]["webhook-id"] == of_first[1]["headers"]["webhook-id"]
        assert all(_verified(secret, c["headers"], c["body"]) for c in of_first)
    elif kind == "bad_signature":
        [call] = of_first
        assert re.fullmatch(r"v3,[0-9a-f]{64}", call["headers"]["webhook-signature"])
        assert not _verified(secret, call["headers"], call["body"])
    else:  # stale: ten minutes old, yet signed for that very timestamp
        [call] = of_first
        assert abs(int(call["headers"]["webhook-timestamp"]) - (time.time() - 600)) < 5
        assert _verified(secret, call["headers"], call["body"])


async def test_random_faults_leave_webhooks_alone(http, simulator, receiver):
    await _submit_with_webhook(http, simulator, receiver.url)
    simulator.fault_rate = 1.0
    [call] = await receiver.wait_for(1)
    simulator.fault_rate = 0
    assert _verified(simulator.webhook_secret, call["headers"], call["body"])
    assert simulator.faults_served == []


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "/hook", "example.com/hook", "http://", "http://[::1"])
async def test_webhook_url_must_be_absolute_http(http, simulator, url):
    async with http.post(f"{simulator.base_url}/api/v3/{EFFECTS}", params={"webhook": url},
                         json=_inputs()) as resp:
        answer = await resp.json()
    assert resp.status == 400 and answer["code"] == 1401 and answer["data"] is None
    assert simulator.tasks == {} and simulator.submissions == []


async def test_webhook_secret_needs_the_api_key(http, simulator):
    secret = await _secret(http, simulator)
    assert secret == simulator.webhook_secret and re.fullmatch(r"whsec_[0-9a-f]{16,}", secret)
    assert Simulator().webhook_secret != secret  # one per simulator
    async with aiohttp.ClientSession() as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with anonymous.get(f"{simulator.base_url}/api/v3/webhook/secret", headers=headers) as resp:
                assert resp.status == 401 and (await resp.json())["code"] == 401


async def test_control_endpoint_scripts_webhook_faults(http, simulator):
    async def control(body):
        async with http.post(f"{simulator.base_url}/_sim/control", json=body) as resp:
            return resp.status

    assert await control({"fail_next": {"endpoint": "webhook", "kind": "drop"}}) == 200
    assert await control({"fail_next": {"endpoint": "webhook", "kind": "reset"}}) == 400
    assert await control({"fail_next": {"endpoint": "webhook"}}) == 400  # "status" is for API calls
    assert [fault.kind for fault in simulator.faults["webhook"]] == ["drop"]


async def test_close_cancels_the_webhooks_still_to_come(http, receiver):
    sim = Simulator(job_seconds=0.2, api_key=API_KEY, video_seconds=0.2)
    await sim.start()
    await _submit_with_webhook(http, sim, receiver.url)
    await sim.close()
    await asyncio.sleep(0.4)
    assert receiver.calls == [] and sim.webhooks_sent == []

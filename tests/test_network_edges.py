"""Attacks on the network-facing parts, found after issue 14 landed: a replayed delivery
while two submits are unconfirmed, a connection flood from one address, and malformed
requests written into the log as error tracebacks.

Everything runs over real sockets on loopback (127.0.0.x) with bounded loops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import pytest

from bot.devtools.tasks import prediction
from bot.engine import Engine
from bot.jobs import UserRef
from bot.webhooks import WebhookListener, job_url, signature
from tests.conftest import RecordingCourier, effect_request
from tests.helpers import settled
from tests.test_webhooks import _free_port

SECRET = "whsec_0123456789abcdef"


def _signed(body: bytes, webhook_id: str = "msg_1") -> dict[str, str]:
    stamp = str(int(time.time()))
    return {"webhook-id": webhook_id, "webhook-timestamp": stamp,
            "webhook-signature": f"v3,{signature(SECRET, webhook_id, stamp, body)}"}


# --- item 10: a replay while two submits are unconfirmed -----------------------------------

def _hooked(settings, *, port: int, request_timeout: float):
    return settings.with_wavespeed(webhook_url=f"http://127.0.0.1:{port}", webhook_listen=f"127.0.0.1:{port}",
                                   request_timeout=request_timeout)


async def test_a_replayed_delivery_does_not_give_one_unconfirmed_job_anothers_video(settings, simulator):
    """Two processes of the bot on one database; both submits go unanswered at once (their
    windows overlap). Job A's signed delivery, replayed to job B's URL before A has adopted
    its task, must not make B adopt A's task: B's user would get A's video (A's photo), and
    A then B's. (A's process waits longer for its submit's answer than B's: A cannot adopt
    its task before the replay is read, as happens by chance when both wait alike.)"""
    engines, couriers = [], []
    try:
        for platform, patience in (("first", 6.0), ("second", 1.0)):
            engine = await Engine.from_settings(_hooked(settings, port=_free_port(), request_timeout=patience))
            courier = RecordingCourier()
            engine.register(platform, courier)
            await engine.start()
            engines.append(engine)
            couriers.append(courier)
        alice, bob = UserRef("first", "1", "alice"), UserRef("second", "2", "bob")

        simulator.job_seconds = 3.0
        simulator.fail_next("submit", kind="accept_hang", delay=8.0)
        first = await engines[0].accept(effect_request(who=alice))
        async with asyncio.timeout(10):
            while not simulator.tasks:
                await asyncio.sleep(0.01)
        [a_task] = simulator.tasks
        simulator.tasks[a_task].created -= 3.0  # A's task has ended while its submit still hangs;
        # B's own task reports long after the replay
        simulator.fail_next("submit", kind="accept_hang", delay=8.0)
        second = await engines[1].accept(effect_request("squish", who=bob))
        async with asyncio.timeout(10):
            while (await engines[1].store.job(second.job.id)).submit_started_at is None:
                await asyncio.sleep(0.01)
        # A's delivery, as WaveSpeed signs it, reaches A's URL; an eavesdropper replays it to B's.
        body = json.dumps(prediction(simulator.tasks[a_task], simulator.base_url, simulator.job_seconds)).encode()
        assert json.loads(body)["status"] == "completed"
        stamp = int(time.time())
        headers = {"webhook-id": "msg_a", "webhook-timestamp": str(stamp),
                   "webhook-signature": simulator.sign("msg_a", stamp, body)}
        async with aiohttp.ClientSession() as session:
            for engine, job_id in ((engines[0], first.job.id), (engines[1], second.job.id)):
                async with session.post(job_url(engine.settings.wavespeed.webhook_url, job_id), data=body,
                                        headers=headers) as resp:
                    assert resp.status == 200
        assert (await engines[0].store.job(first.job.id)).prediction_id is None  # A's submit still waits

        outcomes = [await couriers[0].outcome(first.job.id, timeout=30),
                    await couriers[1].outcome(second.job.id, timeout=30)]
        jobs = [await settled(engines[0], first.job.id), await settled(engines[1], second.job.id)]
        assert jobs[0].prediction_id == a_task
        assert jobs[1].prediction_id != a_task
        for (outcome, video), job in zip(outcomes, jobs, strict=True):
            assert outcome == "delivered"
            assert video == simulator.tasks[job.prediction_id].video  # each its own task's video
    finally:
        for engine in engines:
            await engine.close()


# --- item 9: a flood from one address does not keep others' deliveries out -----------------

async def test_a_connection_flood_from_one_address_does_not_drop_another_addresss_delivery():
    """One address opens connections as fast as it can (each sends half a request header);
    a delivery from another address, whose request comes a few dozen connections of the
    flood after its connect (a sender across the internet is that slow), is still answered."""
    received = []

    async def on_result(job_id, prediction):
        received.append(job_id)

    listener = WebhookListener("127.0.0.1:0", SECRET, on_result, max_connections=16)
    await listener.start()
    opened = 0
    held: list[asyncio.StreamWriter] = []

    async def flood() -> None:
        nonlocal opened
        while opened < 2000:  # bounded: at most 2000 connections, 200 kept open by the flood
            _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
            writer.write(b"POST /wavespeed/jobs/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(writer)
            opened += 1
            if len(held) > 200:
                held.pop(0).close()

    floods = [asyncio.create_task(flood()) for _ in range(4)]
    try:
        async with asyncio.timeout(20):
            while opened < 100:
                await asyncio.sleep(0.01)
            body = json.dumps({"id": "task-1", "model": "kwaivgi/kling-effects", "status": "completed"}).encode()
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, local_addr=("127.0.0.2", 0))
            connected_at = opened
            while opened < connected_at + 64:  # 4 times the connections the listener holds
                await asyncio.sleep(0.005)
            headers = {**_signed(body), "Content-Length": str(len(body))}
            writer.write(b"POST /wavespeed/jobs/7 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n" + body)
            try:
                status = (await asyncio.wait_for(reader.readline(), 5)).split()[1:2]
            except ConnectionError:
                status = []
            writer.close()
        assert status == [b"200"] and received == [7]
    finally:
        for task in floods:
            task.cancel()
        await asyncio.gather(*floods, return_exceptions=True)
        for writer in held:
            writer.close()
        await listener.stop()


# --- item 9: what anyone may send does not write error tracebacks into the log -------------

MALFORMED = {
    "too many headers": b"".join(b"X-%d: 1\r\n" % n for n in range(200)),
    "a header line too long": b"X-Long: " + b"y" * 9000 + b"\r\n",
    "negative Content-Length": b"Content-Length: -1\r\n",
    "two Content-Lengths": b"Content-Length: 3\r\nContent-Length: 4\r\n",
    "chunked and Content-Length": b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
}


async def test_malformed_requests_from_anyone_leave_no_error_traceback_in_the_log(caplog):
    """Any client on the internet can send these; each used to put an ERROR record with a
    traceback (and up to 100 bytes of its choosing) into the bot's log: a log flood."""
    caplog.set_level(logging.INFO)

    async def on_result(job_id, prediction):
        raise AssertionError("nothing here is a delivery")

    listener = WebhookListener("127.0.0.1:0", SECRET, on_result)
    await listener.start()
    try:
        for _ in range(4):
            for extra in MALFORMED.values():
                reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
                writer.write(b"POST /wavespeed/jobs/7 HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\nabc")
                async with asyncio.timeout(3):
                    assert (await reader.readline()).split()[1] == b"400"
                writer.close()
    finally:
        await listener.stop()
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud][:3]


# --- item 11: an output address whose host name cannot be decoded is refused, not a crash --

@pytest.mark.parametrize("output", ["https://xn--static-wavespeed-.ai/v.mp4", "https://xn--/v.mp4"])
async def test_an_output_host_that_cannot_be_decoded_is_refused_and_the_job_still_delivers(
        make_engine, settings, courier, simulator, output):
    """A punycode host that does not decode used to raise out of the host check: the job
    "crashed", failed and refunded although WaveSpeed made (and billed) the video."""
    port = _free_port()
    hooked = settings.with_wavespeed(webhook_url=f"http://127.0.0.1:{port}", webhook_listen=f"127.0.0.1:{port}",
                                     request_timeout=5.0)
    engine = await make_engine(hooked)
    simulator.fail_next("webhook", kind="drop")  # the real delivery is lost; one naming that host arrives
    answer = await engine.accept(effect_request())
    async with asyncio.timeout(10):
        while not (job := await engine.store.job(answer.job.id)).prediction_id:
            await asyncio.sleep(0.02)
    event = {"id": job.prediction_id, "model": job.model_id, "status": "completed",
             "outputs": [output], "has_nsfw_contents": [False]}
    body = json.dumps(event).encode()
    stamp = int(time.time())
    async with aiohttp.ClientSession() as session, session.post(
            job_url(hooked.wavespeed.webhook_url, answer.job.id), data=body, headers={
                "webhook-id": "msg_x", "webhook-timestamp": str(stamp),
                "webhook-signature": simulator.sign("msg_x", stamp, body)}) as resp:
        assert resp.status == 200
    outcome, video = await courier.outcome(answer.job.id, timeout=30)
    assert outcome == "delivered"  # the refused address was asked for afresh: WaveSpeed's own
    assert video == simulator.tasks[job.prediction_id].video

"""WaveSpeedClient's account reads: the model listing, price quotes and the balance,
against the simulator (and, for answers it never gives, a small local server)."""

from __future__ import annotations

import base64
import logging
from decimal import Decimal

import pytest
from aiohttp import web

from bot import wavespeed
from bot.wavespeed import BadRequest, Transient, WaveSpeedClient, WaveSpeedError
from tests.conftest import API_KEY
from tests.helpers import image_bytes

V30 = "kwaivgi/kling-v3.0-pro/image-to-video"
TURBO = "kwaivgi/kling-v2.5-turbo-pro/image-to-video"
PHOTO = "data:image/jpeg;base64," + base64.b64encode(image_bytes()).decode()


@pytest.fixture
async def client(simulator):
    api = WaveSpeedClient(simulator.base_url, API_KEY, retry_cap=0.05)
    yield api
    await api.close()


def _paths(sim, path: str) -> list[str]:
    return [r["path"] for r in sim.requests if r["path"] == path]


async def test_models_lists_every_served_model_as_wavespeed_describes_it(client, simulator):
    models = await client.models()
    assert [m["model_id"] for m in models] == [m["model_id"] for m in simulator.models.listing()]
    turbo = next(m for m in models if m["model_id"] == TURBO)
    assert turbo["base_price"] == 0.35 and turbo["type"] == "image-to-video"
    assert "guidance_scale" in turbo["api_schema"]["api_schemas"][0]["request_schema"]["properties"]
    assert simulator.requests[-1]["headers"]["Authorization"] == f"Bearer {API_KEY}"


async def test_models_is_retried_through_faults(client, simulator):
    simulator.fail_next("models", kind="malformed")
    simulator.fail_next("models", 503, 5003)
    assert len(await client.models()) == len(simulator.models.listing())
    assert simulator.faults_served == [("models", "malformed"), ("models", "503")]
    assert len(_paths(simulator, "/api/v3/models")) == 3


async def test_price_is_the_exact_decimal_of_the_quote(client, simulator):
    simulator.set_base_price("kwaivgi/kling-v1.6-i2v-standard", "0.1")
    quote = await client.price("kwaivgi/kling-v1.6-i2v-standard", {"duration": "5"})
    assert quote == Decimal("0.1") and str(quote) == "0.1"  # not 0.1000000000000000055...
    assert await client.price(V30, {"duration": 12, "sound": True}) == Decimal("2.016")
    assert simulator.price_requests == [
        {"model_id": "kwaivgi/kling-v1.6-i2v-standard", "inputs": {"duration": "5"}},
        {"model_id": V30, "inputs": {"duration": 12, "sound": True}}]


async def test_a_changed_base_price_changes_the_quote(client, simulator):
    before = await client.price(TURBO, {"duration": "10"})
    simulator.set_base_price(TURBO, Decimal("0.45"))
    assert (before, await client.price(TURBO, {"duration": "10"})) == (Decimal("0.7"), Decimal("0.9"))


async def test_price_is_retried_after_a_fault_then_succeeds(client, simulator):
    simulator.fail_next("price", 500, 5000)
    simulator.fail_next("price", kind="reset")
    assert await client.price(TURBO, {}) == Decimal("0.35")
    assert simulator.faults_served == [("price", "500"), ("price", "reset")]
    assert len(_paths(simulator, "/api/v3/model/price")) == 3


async def test_price_gives_up_after_its_retries(simulator):
    client = WaveSpeedClient(simulator.base_url, API_KEY, result_retries=1, retry_cap=0.05)
    simulator.fail_next("price", 503, 5003, times=3)
    try:
        with pytest.raises(Transient):
            await client.price(TURBO, {})
    finally:
        await client.close()
    assert len(_paths(simulator, "/api/v3/model/price")) == 2


async def test_a_refused_quote_is_not_retried(client, simulator):
    with pytest.raises(BadRequest) as refused:
        await client.price(V30, {"duration": 20})
    assert refused.value.code == 1401 and "duration" in str(refused.value)
    assert len(_paths(simulator, "/api/v3/model/price")) == 1


async def test_balance_reads_the_account_and_drops_by_the_price_of_each_task(client, simulator):
    assert await client.balance() == Decimal("100")
    await client.submit(TURBO, {"image": PHOTO, "prompt": "a cat dances", "duration": "10"})
    assert await client.balance() == Decimal("99.3")
    assert _paths(simulator, "/api/v3/account/balance") == []


async def test_balance_falls_back_to_the_newer_path_where_the_old_one_is_not_served(client, simulator):
    simulator.old_balance_path = False
    simulator.balance = Decimal("42.17")
    assert await client.balance() == Decimal("42.17")
    assert [r["path"] for r in simulator.requests] == ["/api/v3/balance", "/api/v3/account/balance"]


async def test_balance_falls_back_once_on_a_404_but_retries_an_outage(client, simulator):
    simulator.fail_next("balance", 404, 404)
    assert await client.balance() == Decimal("100")
    simulator.requests.clear()
    simulator.fail_next("balance", 503, 5003)
    assert await client.balance() == Decimal("100")
    assert [r["path"] for r in simulator.requests] == ["/api/v3/balance", "/api/v3/balance"]


async def test_the_api_key_never_reaches_the_log(client, simulator, caplog):
    caplog.set_level(logging.DEBUG)
    simulator.fail_next("price", 500, 5000)
    simulator.fail_next("models", 429, 429, retry_after=0.01)
    simulator.old_balance_path = False
    await client.price(TURBO, {})
    await client.models()
    await client.balance()
    assert "retrying" in caplog.text and API_KEY not in caplog.text


# --- answers the simulator never gives -----------------------------------------


@pytest.fixture
async def odd_api(aiohttp_server):
    """A server answering each account path with the body queued for it."""
    answers: dict[str, list[tuple[int, object]]] = {}

    async def answer(request: web.Request) -> web.Response:
        status, body = answers[request.path].pop(0)
        return web.json_response(body, status=status)

    app = web.Application()
    for path in ("/api/v3/models", "/api/v3/balance", "/api/v3/account/balance"):
        app.router.add_get(path, answer)
    app.router.add_post("/api/v3/model/price", answer)
    server = await aiohttp_server(app)
    client = WaveSpeedClient(str(server.make_url("")), API_KEY, retry_cap=0.05, result_retries=1)
    yield answers, client
    await client.close()


def _ok(data: object) -> tuple[int, object]:
    return 200, {"code": 200, "message": "success", "data": data}


async def test_listing_entries_that_are_not_objects_are_dropped(odd_api):
    answers, client = odd_api
    answers["/api/v3/models"] = [_ok([{"model_id": "a/b"}, "junk", None, 7, {"model_id": "c/d"}])]
    assert await client.models() == [{"model_id": "a/b"}, {"model_id": "c/d"}]


async def test_an_answer_larger_than_any_listing_is_not_read_into_memory(odd_api, monkeypatch):
    answers, client = odd_api
    monkeypatch.setattr(wavespeed, "LARGEST_ANSWER", 4096)  # the real cap is 64 MiB
    answers["/api/v3/models"] = [_ok([{"model_id": "a/b", "description": "x" * 5000}])] * 2
    with pytest.raises(Transient):
        await client.models()
    answers["/api/v3/models"] = [_ok([{"model_id": "a/b", "description": "x" * 3000}])]
    assert await client.models() == [{"model_id": "a/b", "description": "x" * 3000}]


async def test_a_listing_that_is_not_a_list_is_retried_then_transient(odd_api):
    answers, client = odd_api
    answers["/api/v3/models"] = [_ok({"models": []}), _ok({"models": []})]
    with pytest.raises(Transient):
        await client.models()
    assert answers["/api/v3/models"] == []


@pytest.mark.parametrize("data", [{}, {"price": None}, {"price": "abc"}, {"price": -0.1}, {"price": True},
                                  {"price": "NaN"}, {"price": float("inf")}, {"price": [1]}])
async def test_a_quote_without_a_usable_price_is_an_error(odd_api, data):
    answers, client = odd_api
    answers["/api/v3/model/price"] = [_ok(data)]
    with pytest.raises(WaveSpeedError):
        await client.price("a/b", {})


@pytest.mark.parametrize("value, usd", [(0.3, "0.3"), ("1.25", "1.25"), (2, "2"), (0, "0")])
async def test_a_quote_is_read_exactly(odd_api, value, usd):
    answers, client = odd_api
    answers["/api/v3/model/price"] = [_ok({"price": value, "currency": "USD"})]
    assert await client.price("a/b", {}) == Decimal(usd)


async def test_the_newer_balance_path_may_answer_a_bare_object_or_an_envelope(odd_api):
    answers, client = odd_api
    answers["/api/v3/balance"] = [(404, {"code": 404, "message": "not found", "data": None})] * 2
    answers["/api/v3/account/balance"] = [(200, {"balance": 7.5, "currency": "USD"}),
                                          _ok({"balance": "8.25", "currency": "USD"})]
    assert await client.balance() == Decimal("7.5")
    assert await client.balance() == Decimal("8.25")


async def test_a_refused_key_on_balance_is_not_a_reason_to_try_the_other_path(odd_api):
    answers, client = odd_api
    answers["/api/v3/balance"] = [(401, {"code": 401, "message": "Unauthorized", "data": None})]
    with pytest.raises(WaveSpeedError) as refused:
        await client.balance()
    assert refused.value.status == 401
    assert answers.get("/api/v3/account/balance") is None

"""The simulator as a WaveSpeed account: its model listing, its quotes, and submits checked
against the request schema it serves (what the real API would refuse, it refuses)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import aiohttp
import jsonschema
import pytest

from bot.devtools.simulator import Simulator
from bot.wavespeed import BadRequest, WaveSpeedClient
from tests.conftest import API_KEY
from tests.helpers import image_bytes

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ["kwaivgi/kling-effects", "kwaivgi/kling-v1-ai-avatar-standard", "kwaivgi/kling-v1.6-i2v-standard",
         "kwaivgi/kling-v2.1-i2v-standard", "kwaivgi/kling-v2.0-i2v-master"]
V26 = "kwaivgi/kling-v2.6-pro/image-to-video"
V30 = "kwaivgi/kling-v3.0-pro/image-to-video"
O1 = "kwaivgi/kling-video-o1-std/image-to-video"
TURBO = "kwaivgi/kling-v2.5-turbo-pro/image-to-video"
IGNORED = ["kwaivgi/kling-v2.6-pro/text-to-video", "kwaivgi/kling-lipsync/video-to-video",
           "bytedance/seedance-v1-pro-i2v-720p"]


def photo(width: int = 640, height: int = 480) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(image_bytes(width, height)).decode()


@pytest.fixture
async def client(simulator):
    api = WaveSpeedClient(simulator.base_url, API_KEY, retry_cap=0.05)
    yield api
    await api.close()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"},
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def _listing(http, sim) -> tuple[int, dict]:
    async with http.get(f"{sim.base_url}/api/v3/models") as resp:
        return resp.status, await resp.json()


# --- the listing ---------------------------------------------------------------------


async def test_the_listing_is_wavespeeds_shape_with_a_valid_schema_per_model(http, simulator):
    status, answer = await _listing(http, simulator)
    assert status == 200 and answer["code"] == 200 and answer["message"] == "success"
    models = answer["data"]
    ids = [m["model_id"] for m in models]
    assert {*SEEDS, V26, V30, O1, TURBO, *IGNORED} <= set(ids)
    assert len(ids) == len(set(ids))
    for entry in models:
        assert isinstance(entry["name"], str) and entry["name"]
        assert isinstance(entry["base_price"], (int, float)) and entry["base_price"] > 0
        assert isinstance(entry["type"], str) and {"description", "sort_order", "formula"} <= set(entry)
        [api] = entry["api_schema"]["api_schemas"]
        assert api["api_path"] == f"/api/v3/{entry['model_id']}"
        schema = api["request_schema"]
        jsonschema.validators.validator_for(schema).check_schema(schema)
        assert set(schema.get("required", [])) <= set(schema["properties"])


async def test_the_seed_entries_are_served_as_the_bot_ships_them(http, simulator):
    seeds = json.loads((ROOT / "bot" / "catalog" / "seed_models.json").read_text())
    _, answer = await _listing(http, simulator)
    assert answer["data"][:len(seeds)] == seeds


async def test_the_newer_models_carry_their_own_field_names(http, simulator):
    _, answer = await _listing(http, simulator)
    schema = {m["model_id"]: m["api_schema"]["api_schemas"][0]["request_schema"] for m in answer["data"]}
    v30 = schema[V30]["properties"]
    assert (v30["duration"]["type"], v30["duration"]["minimum"], v30["duration"]["maximum"],
            v30["duration"]["default"]) == ("integer", 3, 15, 5)
    assert v30["aspect_ratio"]["enum"] == ["16:9", "9:16", "1:1"]
    assert {"cfg_scale", "sound", "shot_type", "multi_prompt", "end_image"} <= set(v30)
    assert v30["sound"] == {**v30["sound"], "type": "boolean", "default": False}
    assert {"last_image", "sound"} <= set(schema[O1]["properties"]) and "end_image" not in schema[O1]["properties"]
    assert schema[V26]["properties"]["duration"]["enum"] == ["5", "10"]
    assert {"cfg_scale", "sound", "end_image"} <= set(schema[V26]["properties"])
    assert "guidance_scale" in schema[TURBO]["properties"] and "end_image" not in schema[TURBO]["properties"]
    assert "10MB" in v30["image"]["description"] and "300*300px" in v30["image"]["description"]
    assert "video" in schema["kwaivgi/kling-lipsync/video-to-video"]["required"]
    assert "image" not in schema["kwaivgi/kling-v2.6-pro/text-to-video"]["properties"]


# --- quotes --------------------------------------------------------------------------


@pytest.mark.parametrize("model, inputs, usd", [
    (TURBO, {}, "0.35"),
    (TURBO, {"duration": "10"}, "0.7"),
    (V30, {"duration": 12, "sound": True}, "2.016"),  # 0.56 / 5 * 12 * 1.5
    (V30, {"duration": 3}, "0.336"),
    (O1, {"duration": 10, "sound": False}, "0.84"),
    (V26, {"duration": "5", "sound": True}, "0.75"),
    ("kwaivgi/kling-v1-ai-avatar-standard", {}, "0.25"),
    ("kwaivgi/kling-effects", {"effect_scene": "hula"}, "0.25"),
    ("kwaivgi/kling-v2.0-i2v-master", {"duration": "10"}, "2"),
])
async def test_quotes_follow_the_base_price_per_second_and_sound(client, simulator, model, inputs, usd):
    assert await client.price(model, inputs) == Decimal(usd)
    assert simulator.price_requests[-1] == {"model_id": model, "inputs": inputs}


async def test_the_quote_answer_is_wavespeeds_shape(http, simulator):
    async with http.post(f"{simulator.base_url}/api/v3/model/price",
                         json={"model_id": TURBO, "inputs": {"duration": "10"}}) as resp:
        answer = await resp.json()
    assert resp.status == 200 and answer["code"] == 200
    assert answer["data"] == {"price": 0.7, "discounted_price": 0.7, "discount_rate": 0, "currency": "USD"}


async def test_a_changed_base_price_changes_the_listing_and_the_quote(http, client, simulator):
    assert await client.price(V30, {"duration": 10}) == Decimal("1.12")
    simulator.set_base_price(V30, "0.7")
    assert await client.price(V30, {"duration": 10}) == Decimal("1.4")
    _, answer = await _listing(http, simulator)
    assert next(m for m in answer["data"] if m["model_id"] == V30)["base_price"] == 0.7


@pytest.mark.parametrize("model, inputs, field", [
    (V30, {"duration": 20}, "duration"),
    (V30, {"aspect_ratio": "4:3"}, "aspect_ratio"),
    (TURBO, {"end_image": "https://example.com/end.jpg"}, "end_image"),
    (V26, {"duration": 10}, "duration"),  # "5" or "10", as text
    ("kwaivgi/kling-nonexistent/image-to-video", {}, "model_id"),
])
async def test_a_quote_the_schema_refuses_is_wavespeeds_error_envelope(client, simulator, model, inputs, field):
    with pytest.raises(BadRequest) as refused:
        await client.price(model, inputs)
    assert (refused.value.status, refused.value.code) == (400, 1401)
    assert field in str(refused.value)
    assert [r for r in simulator.requests if r["path"] == "/api/v3/model/price"] != []


# --- submits checked against the served schema ---------------------------------------


@pytest.mark.parametrize("model, extra, field", [
    (V30, {"duration": 20}, "duration"),
    (V30, {"aspect_ratio": "4:3"}, "aspect_ratio"),
    (V30, {"sound": "yes"}, "sound"),
    (TURBO, {"end_image": photo()}, "end_image"),  # additionalProperties: false
    (V26, {"seed": 7}, "seed"),
    (V26, {"duration": 5}, "duration"),
    (O1, {"duration": 2}, "duration"),
    ("kwaivgi/kling-v1.6-i2v-standard", {"guidance_scale": 1.5}, "guidance_scale"),
    ("kwaivgi/kling-v1.6-i2v-standard", {"prompt": "x" * 2501}, "prompt"),
    ("kwaivgi/kling-effects", {"effect_scene": "no_such_scene"}, "effect_scene"),
])
async def test_a_submit_the_schema_refuses_answers_1401_and_creates_no_task(client, simulator, model, extra, field):
    balance = simulator.balance
    with pytest.raises(BadRequest) as refused:
        await client.submit(model, {"image": photo(), "prompt": "a cat dances", **extra})
    assert (refused.value.status, refused.value.code) == (400, 1401)
    assert field in str(refused.value)
    assert simulator.tasks == {} and simulator.submissions == [] and simulator.balance == balance


@pytest.mark.parametrize("model, body, missing", [
    (V26, {"image": photo()}, "prompt"),
    (O1, {"prompt": "a cat dances"}, "image"),
    ("kwaivgi/kling-effects", {"image": photo()}, "effect_scene"),
    ("kwaivgi/kling-v1-ai-avatar-standard", {"image": photo(), "audio": ""}, "audio"),
    (V30, {"image": photo(), "multi_prompt": [{"prompt": "first shot"}]}, "multi_prompt.0.duration"),
])
async def test_a_submit_missing_a_required_input_answers_1400(client, simulator, model, body, missing):
    with pytest.raises(BadRequest) as refused:
        await client.submit(model, body)
    assert (refused.value.status, refused.value.code) == (400, 1400)
    assert str(refused.value) == f"missing required parameter: {missing}"
    assert simulator.tasks == {}


@pytest.mark.parametrize("model, body, message", [
    (V30, {"image": photo(1500, 500)}, "image aspect ratio must be between 1:2.5 and 2.5:1"),
    (O1, {"image": photo(), "prompt": "a cat", "last_image": photo(200, 200)},
     "last_image resolution must be at least 300*300px"),
    (V26, {"image": photo(), "prompt": "a cat", "end_image": "data:image/png;base64,AAAA"},
     "end_image is not a readable image"),
])
async def test_media_rules_come_from_the_schemas_descriptions(client, simulator, model, body, message):
    with pytest.raises(BadRequest) as refused:
        await client.submit(model, body)
    assert refused.value.code == 1401 and str(refused.value) == message
    assert simulator.tasks == {}


async def test_the_same_wide_photo_passes_a_model_whose_schema_states_no_aspect_ratio(client, simulator):
    task = await client.submit(O1, {"image": photo(1500, 500), "prompt": "a wide street"})
    assert task.id in simulator.tasks


async def test_a_submit_to_a_three_segment_id_completes_and_its_video_is_read(client, simulator, tmp_path):
    body = {"image": photo(), "prompt": "a cat dances", "duration": 12, "sound": True, "aspect_ratio": "9:16",
            "end_image": photo(800, 600)}
    task = await client.submit(V30, body)
    assert simulator.submissions == [{"model": V30, "body": body}]
    for _ in range(100):
        result = await client.result(task.id, task.result_url)
        if result.status == "completed":
            break
        await asyncio.sleep(0.05)
    assert result.status == "completed" and result.model == V30 and result.outputs
    assert await client.download(result.outputs[0], tmp_path / "v30.mp4") > 1000
    assert simulator.balance == Decimal("100") - Decimal("2.016")  # the account pays the quote


async def test_models_the_bot_ignores_still_run_at_the_simulator(client, simulator):
    t2v = await client.submit("kwaivgi/kling-v2.6-pro/text-to-video", {"prompt": "a city at night"})
    other = await client.submit("bytedance/seedance-v1-pro-i2v-720p", {"image": photo(), "prompt": "waves"})
    assert {t2v.id, other.id} <= set(simulator.tasks)


async def test_the_older_routes_still_win_over_slashed_model_ids(client, simulator, http):
    url = await client.upload(image_bytes(), "cat.jpg", "image/jpeg")
    task = await client.submit("kwaivgi/kling-v2.0-i2v-master", {"image": url, "end_image": url})
    assert (await client.webhook_secret()).startswith("whsec_")
    assert (await client.result(task.id)).id == task.id
    async with http.post(f"{simulator.base_url}/api/v3/predictions", json={}) as resp:
        assert (await resp.json())["data"]["items"][0]["id"] == task.id


async def test_a_removed_model_404s_and_leaves_the_listing_until_restored(client, http, simulator):
    simulator.remove_model(V26)
    status, answer = await _listing(http, simulator)
    assert V26 not in [m["model_id"] for m in answer["data"]]
    with pytest.raises(BadRequest) as refused:
        await client.submit(V26, {"image": photo(), "prompt": "a cat dances"})
    assert (refused.value.status, refused.value.code) == (404, 404)
    with pytest.raises(BadRequest):
        await client.price(V26, {})
    assert simulator.tasks == {}
    simulator.restore_model(V26)
    assert V26 in [m["model_id"] for m in (await _listing(http, simulator))[1]["data"]]
    assert (await client.submit(V26, {"image": photo(), "prompt": "a cat dances"})).id in simulator.tasks


def test_scripting_an_unknown_model_is_refused():
    sim = Simulator()
    for script in (sim.remove_model, sim.restore_model, lambda m: sim.set_base_price(m, 1)):
        with pytest.raises(ValueError):
            script("kwaivgi/kling-v9")


async def test_the_control_endpoint_scripts_prices_removals_and_the_balance(http, simulator):
    async def control(body):
        async with http.post(f"{simulator.base_url}/_sim/control", json=body) as resp:
            return resp.status

    assert await control({"base_price": {"model_id": TURBO, "usd": "0.4"}}) == 200
    assert await control({"remove_model": O1, "balance": "12.5"}) == 200
    assert await control({"remove_model": "kwaivgi/kling-v9"}) == 400
    _, answer = await _listing(http, simulator)
    listed = {m["model_id"]: m["base_price"] for m in answer["data"]}
    assert listed[TURBO] == 0.4 and O1 not in listed and simulator.balance == Decimal("12.5")
    assert await control({"restore_model": O1}) == 200
    assert O1 in [m["model_id"] for m in (await _listing(http, simulator))[1]["data"]]


async def test_the_account_routes_need_the_api_key(simulator):
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer wrong"}) as http:
        for method, path in (("GET", "/api/v3/models"), ("POST", "/api/v3/model/price"),
                             ("GET", "/api/v3/balance"), ("GET", "/api/v3/account/balance")):
            async with http.request(method, simulator.base_url + path, json={}) as resp:
                assert resp.status == 401, path


def test_the_simulator_no_longer_needs_the_bots_catalog():
    """It checks submits against the schemas it serves, not the bot's own model table."""
    probe = "import sys, bot.devtools.simulator; print('bot.catalog' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"

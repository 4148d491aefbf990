"""WaveSpeed's model listing -> the catalog on offer: which models, their names, their
options under each model's own field names, the schema's refusals, credits in decimal."""

from __future__ import annotations

import copy
import json
import logging
import re
from decimal import Decimal
from pathlib import Path

import pytest

from bot import catalog
from bot.catalog import ModelChoice, Params, ValidationError, build_catalog, credits_for
from bot.catalog.listing import seed_listing

NEWER = Path(catalog.__file__).parent.parent / "devtools" / "newer_models.json"


def live_listing() -> list[dict]:
    """What the simulator serves: the five seeds and the newer models (and ones to ignore)."""
    return seed_listing() + json.loads(NEWER.read_text(encoding="utf-8"))


def test_only_kling_models_that_take_a_photo_become_entries():
    offer = build_catalog(live_listing(), ModelChoice(enabled=("*",)))
    ids = {m.id for m in offer.models}
    assert "kwaivgi/kling-v3.0-pro/image-to-video" in ids and "kwaivgi/kling-video-o1-std/image-to-video" in ids
    assert not {"kwaivgi/kling-v2.6-pro/text-to-video", "kwaivgi/kling-lipsync/video-to-video",
                "bytedance/seedance-v1-pro-i2v-720p"} & ids
    assert {m.key for m in offer.models_of("animate")} >= {"v1.6", "v2.1", "master", "v2.6-pro", "v3.0-pro",
                                                          "o1-std", "v2.5-turbo-pro"}


def test_the_default_offer_is_the_seeds_plus_the_newest_of_each_tier():
    offer = build_catalog(live_listing())
    assert [m.key for m in offer.offered] == ["effects", "avatar", "v1.6", "v2.1", "master", "v3.0-pro"]
    assert offer.default_animate == "v2.1"


def test_without_a_listing_the_five_built_in_models_are_offered():
    offer = build_catalog(None)
    assert [m.key for m in offer.offered] == ["effects", "avatar", "v1.6", "v2.1", "master"]
    assert offer.listed("kwaivgi/kling-v2.1-i2v-standard") and offer.listed("kwaivgi/anything")


@pytest.mark.parametrize(("name", "model_id"), [
    ("v3", "kwaivgi/kling-v3.0-pro/image-to-video"),
    ("V3.0-PRO", "kwaivgi/kling-v3.0-pro/image-to-video"),
    ("kwaivgi/kling-v3.0-pro/image-to-video", "kwaivgi/kling-v3.0-pro/image-to-video"),
    ("kling-v3.0-pro/image-to-video", "kwaivgi/kling-v3.0-pro/image-to-video"),
    ("v2.6", "kwaivgi/kling-v2.6-pro/image-to-video"),
    ("o1", "kwaivgi/kling-video-o1-std/image-to-video"),
    ("turbo", "kwaivgi/kling-v2.5-turbo-pro/image-to-video"),
    ("v2.1", "kwaivgi/kling-v2.1-i2v-standard"),
    ("master", "kwaivgi/kling-v2.0-i2v-master"),
])
def test_short_names_reach_each_model(name, model_id):
    offer = build_catalog(live_listing(), ModelChoice(enabled=("*",)))
    assert offer.resolve_model(name, "animate").id == model_id


def test_the_operator_picks_models_by_glob_names_them_and_sets_the_default():
    choice = ModelChoice(enabled=("kwaivgi/kling-effects", "*v2.6*", "kling-video-o1*"), default="o1",
                         names={"cinema": "kwaivgi/kling-v2.6-pro/image-to-video"})
    offer = build_catalog(live_listing(), choice)
    assert [m.key for m in offer.offered] == ["effects", "v2.6-pro", "o1-std"]
    assert offer.default_animate == "o1-std"
    assert offer.resolve_model(None, "animate").key == "o1-std"
    assert offer.resolve_model("cinema", "animate").key == "v2.6-pro"
    with pytest.raises(ValidationError, match=re.escape("Unknown model 'v2.1'. Choose one of: v2.6-pro, o1-std")):
        offer.resolve_model("v2.1", "animate")
    with pytest.raises(ValidationError, match="not available right now"):
        offer.resolve_model(None, "avatar")


def test_a_default_that_is_not_offered_falls_back_to_an_offered_model(caplog):
    with caplog.at_level(logging.WARNING):
        offer = build_catalog(live_listing(), ModelChoice(enabled=("*v3.0*",), default="master"))
    assert offer.default_animate == "v3.0-pro"
    assert "[models] default 'master'" in caplog.text


def test_options_go_out_under_each_models_own_field_names():
    offer = build_catalog(live_listing(), ModelChoice(enabled=("*",)))
    v3 = offer.resolve_model("v3", "animate")
    assert offer.check_params(v3, Params(prompt="a cat dances", duration=12, sound=True, aspect="9:16",
                                         guidance=0.7)) == {
        "prompt": "a cat dances", "cfg_scale": 0.7, "duration": 12, "sound": True, "aspect_ratio": "9:16"}
    seed = offer.resolve_model("v2.1", "animate")
    assert offer.check_params(seed, Params(prompt="a cat", duration=10, guidance=0.3)) == {
        "prompt": "a cat", "guidance_scale": 0.3, "duration": "10"}
    o1 = offer.resolve_model("o1", "animate")
    assert o1.field("end_image") == "last_image"
    assert offer.check_params(o1, Params(prompt="a cat", has_end_image=True)) == {"prompt": "a cat", "duration": 5}


@pytest.mark.parametrize(("model", "params", "refusal"), [
    ("v3", Params(prompt="a cat", duration=20), "Duration must be from 3 to 15 seconds (got 20)."),
    ("v3", Params(prompt="a cat", aspect="4:3"), "makes 16:9 or 9:16 or 1:1 videos (got 4:3)."),
    ("turbo", Params(prompt="a cat", has_end_image=True), "takes an end image"),
    ("turbo", Params(prompt="a cat", sound=True), "makes no sound"),
    ("v2.6", Params(prompt="a cat", duration=7), "Duration must be 5 or 10 seconds (got 7)."),
    ("v2.6", Params(prompt="a cat", guidance=1.5), "Guidance must be between 0 and 1"),
    ("o1", Params(prompt=""), "needs a prompt"),
])
def test_requests_the_model_does_not_take_are_refused_in_plain_words(model, params, refusal):
    offer = build_catalog(live_listing(), ModelChoice(enabled=("*",)))
    with pytest.raises(ValidationError) as refused:
        offer.check_params(offer.resolve_model(model, "animate"), params)
    assert refusal in str(refused.value)


def test_the_schema_itself_refuses_what_the_friendly_checks_do_not_know():
    listing = live_listing()
    v3 = next(e for e in listing if e["model_id"] == "kwaivgi/kling-v3.0-pro/image-to-video")
    schema = v3["api_schema"]["api_schemas"][0]["request_schema"]
    schema["properties"]["prompt"]["maxLength"] = 20
    offer = build_catalog(listing, ModelChoice(enabled=("*",)))
    with pytest.raises(ValidationError, match="at most 20 characters"):
        offer.check_params(offer.resolve_model("v3", "animate"), Params(prompt="a cat dances in the rain at night"))


def test_a_live_seed_entry_that_disagrees_keeps_the_built_in_one_and_says_why(caplog):
    listing = live_listing()
    v21 = next(e for e in listing if e["model_id"] == "kwaivgi/kling-v2.1-i2v-standard")
    changed = copy.deepcopy(v21)
    changed["api_schema"]["api_schemas"][0]["request_schema"]["properties"]["duration"]["enum"] = ["5"]
    changed["base_price"] = 0.5
    listing[listing.index(v21)] = changed
    with caplog.at_level(logging.WARNING):
        offer = build_catalog(listing)
    assert offer.resolve_model("v2.1", "animate").durations == (5, 10)
    assert "kwaivgi/kling-v2.1-i2v-standard" in caplog.text and "durations [5, 10] -> [5]" in caplog.text


def test_a_live_seed_entry_that_agrees_replaces_the_built_in_one():
    listing = live_listing()
    master = next(e for e in listing if e["model_id"] == "kwaivgi/kling-v2.0-i2v-master")
    master["base_price"] = 1.4
    offer = build_catalog(listing)
    model = offer.resolve_model("master", "animate")
    assert model.base_usd == Decimal("1.4") and model.cost == 6  # ceil(1.4 / 0.25)


def test_a_model_gone_from_the_listing_is_no_longer_offered_nor_listed():
    listing = [e for e in live_listing() if "v3.0" not in e["model_id"]]
    offer = build_catalog(listing)
    assert "v3.0-pro" not in offer.model_keys("animate")
    assert not offer.listed("kwaivgi/kling-v3.0-pro/image-to-video")
    stand_in = offer.model_by_id("kwaivgi/kling-v3.0-pro/image-to-video")
    assert stand_in.title == "v3.0-pro"  # a queued job of it can still be named


@pytest.mark.parametrize(("usd", "credit", "credits"), [
    ("0.3", "0.1", 3),  # 0.3 / 0.1 is 2.9999999999999996 in floats
    ("0.7", "0.1", 7),  # and 6.999999999999999
    ("0.75", "0.25", 3),
    ("0.76", "0.25", 4),
    ("0.01", "0.25", 1),
    ("1.00", "0.25", 4),
])
def test_prices_become_whole_credits_rounding_up_exactly(usd, credit, credits):
    assert credits_for(Decimal(usd), Decimal(credit)) == credits


def test_a_listed_model_the_bot_cannot_read_is_not_offered_but_not_withdrawn_either():
    """Its queued jobs still go to WaveSpeed, which serves it: refunding them as withdrawn would be wrong."""
    listing = live_listing()
    v3 = next(e for e in listing if e["model_id"] == "kwaivgi/kling-v3.0-pro/image-to-video")
    v3["api_schema"] = {"api_schemas": [{"request_schema": "not a schema"}]}
    offer = build_catalog(listing, ModelChoice(enabled=("*",)))
    assert "v3.0-pro" not in offer.model_keys("animate")
    assert offer.listed("kwaivgi/kling-v3.0-pro/image-to-video")
    assert not offer.listed("kwaivgi/kling-v9-pro/image-to-video")

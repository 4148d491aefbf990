"""Review of #16: [costs] under any name the model answers to, family names that follow
the offer, and an [models] enabled entry that matches nothing is said."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from bot import catalog
from bot.catalog import ModelChoice, Params, build_catalog
from bot.catalog.listing import seed_listing
from bot.config import ModelsSettings
from bot.jobs import GenerationRequest
from tests.conftest import user
from tests.helpers import image_bytes

V3 = "kwaivgi/kling-v3.0-pro/image-to-video"
V3_STD = "kwaivgi/kling-v3.0-std/image-to-video"
NEWER = Path(catalog.__file__).parent.parent / "devtools" / "newer_models.json"


def listing_with_v3_std() -> list[dict]:
    """The simulator's listing plus a v3.0 standard (WaveSpeed lists both tiers of v3.0)."""
    newer = json.loads(NEWER.read_text(encoding="utf-8"))
    std = copy.deepcopy(next(entry for entry in newer if entry["model_id"] == V3))
    std.update(model_id=V3_STD, name="Kling v3.0 Std Image-to-Video", base_price=0.42)
    return seed_listing() + newer + [std]


def with_credits(settings, costs: dict, names: dict | None = None):
    return replace(settings, quota=replace(settings.quota, daily_credits=100), costs=costs,
                   models=ModelsSettings(names=names or {}))


@pytest.mark.parametrize(("costs", "names"), [
    ({"v3": 2}, None),                                # the family name /help and the README teach
    ({"cinema": 2}, {"cinema": V3}),                  # the operator's own [models.names] name
    ({"V3.0-Pro": 2}, None),                          # a name is a name in any case, as users type it
])
async def test_costs_apply_under_any_name_the_model_answers_to(make_engine, settings, costs, names):
    engine = await make_engine(with_credits(settings, costs, names))
    assert "/animate v3.0-pro 2 credits per 5 s" in engine.price_text()
    answer = await engine.accept(GenerationRequest(user(), "animate", image_bytes(800, 600),
                                                   Params(prompt="a cat", duration=7), model="v3",
                                                   reply_to={"chat": 1}))
    assert answer.job.cost == 4  # 2 per started 5 s, 7 s: not the quote's 3
    assert (await engine.balance(user())).total == 96


async def test_a_costs_table_under_an_id_shows_as_a_table(make_engine, settings):
    engine = await make_engine(with_credits(settings, {V3: {5: 2, 10: 3}}))
    text = engine.price_text()
    assert "/animate v3.0-pro " in text and "2 credits for 5 s" in text and "3 credits for 10 s" in text, text


def test_a_family_name_goes_to_the_offered_member_of_its_family():
    offer = build_catalog(listing_with_v3_std(), ModelChoice(enabled=("kwaivgi/kling-v2.1-*", "*v3.0-std*")))
    assert offer.resolve_model("v3", "animate").id == V3_STD
    both = build_catalog(listing_with_v3_std(), ModelChoice(enabled=("*v3.0-*",)))
    assert both.resolve_model("v3", "animate").id == V3  # pro is preferred when both are offered


def test_an_enabled_entry_that_matches_no_listed_model_is_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="bot.catalog.offer"):
        offer = build_catalog(listing_with_v3_std(), ModelChoice(enabled=("kwaivgi/kling-v2.1-*", "v3.5-pro")))
    assert [m.key for m in offer.offered] == ["v2.1"]
    assert any("v3.5-pro" in r.getMessage() and "matches no" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.catalog.offer"):
        build_catalog(None, ModelChoice(enabled=("kwaivgi/kling-v2.1-*", "v3.5-pro")))  # no listing yet: unknown
    assert not any("matches no" in r.getMessage() for r in caplog.records)


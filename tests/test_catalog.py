from __future__ import annotations

import re

import pytest

from bot import catalog
from bot.catalog import ValidationError


def test_all_77_effects_with_the_apis_own_spellings():
    assert len(catalog.EFFECTS) == len(set(catalog.EFFECTS)) == 77
    for odd in ("let's_ride", "boylfriend", "offic_escape_plow", "heart_gesture_1"):
        assert odd in catalog.EFFECTS


@pytest.mark.parametrize("typed, api_name", [
    ("hula", "hula"), ("HULA", "hula"), ("jelly press", "jelly_press"), ("jelly-press", "jelly_press"),
    ("lets ride", "let's_ride"), ("let's ride", "let's_ride"), ("boyfriend", "boylfriend"),
    ("office escape plow", "offic_escape_plow"), ("heart gesture", "heart_gesture_1"),
])
def test_effect_names_as_people_type_them(typed, api_name):
    assert catalog.resolve_effect(typed) == api_name


def test_unknown_effect_suggests_the_closest():
    with pytest.raises(ValidationError, match=r"Unknown effect 'hulla'. Did you mean 'hula'\?"):
        catalog.resolve_effect("hulla")
    with pytest.raises(ValidationError, match="/effects lists the 77 effects"):
        catalog.resolve_effect("zzzzqqq")


def test_effect_search_puts_prefix_matches_first():
    assert catalog.search_effects("jel")[:4] == ["jelly_press", "jelly_slice", "jelly_squish", "jelly_jiggle"]
    assert catalog.search_effects("hug")[0] in ("santa_hug", "jesus_hug", "polar_bear_hug")
    assert len(catalog.search_effects("")) == 25


@pytest.mark.parametrize("name, model_id", [
    ("v1.6", "kwaivgi/kling-v1.6-i2v-standard"), ("1.6", "kwaivgi/kling-v1.6-i2v-standard"),
    ("v2.1", "kwaivgi/kling-v2.1-i2v-standard"), ("master", "kwaivgi/kling-v2.0-i2v-master"),
    ("kwaivgi/kling-v2.0-i2v-master", "kwaivgi/kling-v2.0-i2v-master"), (None, "kwaivgi/kling-v2.1-i2v-standard"),
])
def test_model_names(name, model_id):
    assert catalog.BUILT_IN.resolve_model(name, "animate").id == model_id


def test_effects_model_is_not_an_animate_model():
    with pytest.raises(ValidationError, match=re.escape("Choose one of: v1.6, v2.1, master")):
        catalog.BUILT_IN.resolve_model("effects", "animate")

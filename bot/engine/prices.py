"""What things cost, before anyone spends: the price list, quotes, affordable audio.

The credit rules themselves are ``bot.credits.cost_of``; this module only asks them
the questions a chat needs answered before a user commits to anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot import catalog, messages
from bot.catalog import Kind, Params
from bot.credits import cost_of

UNIT_SECONDS = 5  # credits are charged per started 5 s of video


def price_text(costs: Mapping[str, Any]) -> str:
    """Every model's price, as help texts and greetings show it."""
    kinds: list[Kind] = ["effect", "animate", "avatar"]  # the order help texts introduce them
    return messages.price_list([(_name(model), _price(model, costs))
                                for kind in kinds for model in catalog.models_of(kind)])


def _name(model: catalog.Model) -> str:
    return f"/{model.kind}" if len(catalog.models_of(model.kind)) == 1 else f"/{model.kind} {model.key}"


def _price(model: catalog.Model, costs: Mapping[str, Any]) -> str:
    if not model.durations and model.kind != "avatar":  # fixed length: one price
        return messages.price(cost_of(model, UNIT_SECONDS, costs), None)
    rate = costs.get(model.key, model.cost)
    if isinstance(rate, dict):  # a table by clip length
        return messages.price_table([(seconds, cost_of(model, seconds, costs)) for seconds in model.durations])
    return messages.price(cost_of(model, UNIT_SECONDS, costs), UNIT_SECONDS)


def quote(kind: Kind, model_name: str | None, params: Params, costs: Mapping[str, Any]) -> int:
    """Credits a request would cost (an avatar clip: its shortest, 5 s); ValidationError
    when the request is refused anyway."""
    model = catalog.resolve_model(model_name, kind)
    inputs = catalog.check_params(model, params)
    return cost_of(model, int(str(inputs.get("duration", UNIT_SECONDS))), costs)


def unit_cost(kind: Kind, costs: Mapping[str, Any]) -> int:
    """Credits for the first 5 s of a kind's default model."""
    return cost_of(catalog.resolve_model(None, kind), UNIT_SECONDS, costs)


def affordable_audio(have: int, max_seconds: float, costs: Mapping[str, Any]) -> float:
    """Seconds of avatar audio ``have`` credits buy, at most ``max_seconds``; 0: not even 5 s."""
    unit = unit_cost("avatar", costs)
    if unit <= 0:
        return max_seconds
    return min(max_seconds, float(have // unit * UNIT_SECONDS))

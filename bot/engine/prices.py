"""What things cost, before anyone spends: WaveSpeed's quotes, turned into whole credits.

Each request is quoted with ``POST /api/v3/model/price`` for exactly its inputs, cached
per distinct inputs that can change the price (not prompts or media), and rounded up to
whole credits at ``[quota] credit_usd``. ``[costs]`` fixes a model's credits instead.
Without a quote (WaveSpeed unreachable) the catalog's cost applies, never zero.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot import catalog, messages
from bot.catalog import Catalog, Kind, Model, Params
from bot.catalog.schema import MEDIA_FIELDS, MEDIA_STAND_IN
from bot.config import Settings
from bot.credits import cost_of
from bot.wavespeed import BadRequest, WaveSpeedClient, WaveSpeedError

log = logging.getLogger(__name__)

UNIT_SECONDS = 5  # prices are shown per 5 s of video
QUOTE_WAIT = 5.0  # a quote that takes longer is given up: the catalog's cost applies
QUOTES_KEPT_FOR = 3600.0  # a quote is asked again after this long (and after each catalog refresh)
QUOTE_AT_ONCE = 4  # quotes asked concurrently when warming the menus' prices
# After WaveSpeed failed to quote (unreachable, slow, 5xx), no quote is asked for this long:
# in an outage each request would otherwise wait QUOTE_WAIT before its fallback price.
QUOTES_PAUSED_FOR = 60.0
# No Kling clip costs more (the dearest, 15 s of v3 with sound, is a few dollars); a quote of
# more, or of nothing, is a broken answer: the catalog's cost applies rather than charging
# thousands of credits (or one) for it.
QUOTE_CEILING_USD = Decimal(100)
# Inputs that never change what a clip costs: left out of the cache key.
PRICE_FREE = frozenset({*MEDIA_FIELDS, "prompt", "negative_prompt", "guidance_scale", "cfg_scale",
                        "effect_scene", "multi_prompt", "seed", "shot_type"})


@dataclass(frozen=True)
class Price:
    """A clip's price: the credits charged and the USD quote they came from (None: no quote)."""

    credits: int
    usd: Decimal | None


class Prices:
    """Quotes per model and inputs (cached), the credits they make, the price texts."""

    def __init__(self, settings: Settings, client: WaveSpeedClient, catalog_now: Callable[[], Catalog],
                 clock: Callable[[], float]):
        self.settings = settings
        self.client = client
        self.catalog_now = catalog_now
        self.clock = clock
        self._quotes: dict[tuple[Any, ...], tuple[float, Decimal]] = {}
        self._asking: dict[tuple[Any, ...], asyncio.Future[Decimal | None]] = {}
        self._warned_at = -math.inf
        self._paused_until = -math.inf  # no quote is asked before this (WaveSpeed just failed to give one)

    def clear(self, _catalog: Catalog | None = None) -> None:
        """Forget every quote (a new catalog may price differently), and ask again at once."""
        self._quotes.clear()
        self._paused_until = -math.inf

    # --- quotes -----------------------------------------------------------------------

    @staticmethod
    def _key(model: Model, inputs: Mapping[str, object]) -> tuple[Any, ...]:
        priced = {k: v for k, v in inputs.items() if k not in PRICE_FREE}
        return model.id, json.dumps(priced, sort_keys=True, default=str)

    def cached(self, model: Model, inputs: Mapping[str, object]) -> Decimal | None:
        found = self._quotes.get(self._key(model, inputs))
        return found[1] if found is not None and self.clock() - found[0] < QUOTES_KEPT_FOR else None

    async def quote_usd(self, model: Model, inputs: Mapping[str, object]) -> Decimal | None:
        """WaveSpeed's price for these inputs (cached); None when it cannot be had now."""
        if (known := self.cached(model, inputs)) is not None:
            return known
        if self.clock() < self._paused_until:
            return None
        key = self._key(model, inputs)
        if key not in self._asking:  # one question per distinct price at a time
            self._asking[key] = asyncio.ensure_future(self._ask(model, dict(inputs), key))
        return await asyncio.shield(self._asking[key])

    async def _ask(self, model: Model, inputs: dict[str, object], key: tuple[Any, ...]) -> Decimal | None:
        body = {**inputs, **{name: MEDIA_STAND_IN for name in model.required if name in MEDIA_FIELDS}}
        try:
            usd: Decimal = await asyncio.wait_for(self.client.price(model.id, body), QUOTE_WAIT)
        except Exception as err:  # a quote is never worth a failed request: the catalog's cost serves
            if not isinstance(err, BadRequest):  # not these inputs: WaveSpeed (or the way to it) is down
                self._paused_until = self.clock() + QUOTES_PAUSED_FOR
            if self.clock() - self._warned_at > 60:
                self._warned_at = self.clock()
                expected = isinstance(err, WaveSpeedError | OSError | TimeoutError)
                log.warning("no price quote for %s (%s): charging the catalog's cost", model.id,
                            str(err) or type(err).__name__, exc_info=not expected)
            return None
        finally:
            self._asking.pop(key, None)
        if not 0 < usd <= QUOTE_CEILING_USD:
            log.warning("WaveSpeed quoted %s USD for %s: no price of a clip; charging the catalog's cost",
                        str(usd)[:20], model.id)
            return None
        self._quotes[key] = (self.clock(), usd)
        return usd

    # --- credits ----------------------------------------------------------------------

    def credits(self, model: Model, seconds: float, usd: Decimal | None) -> int:
        """Credits for a clip of ``seconds`` given its quote (None: the catalog's cost)."""
        override = self._override(model)
        if override is not None:
            return cost_of(model, seconds, {model.key: override})
        total = self.clip_usd(model, seconds, usd)
        if total is None:
            return catalog.fallback_credits(model, seconds)
        return max(1, catalog.credits_for(total, self.settings.quota.credit_usd))

    def _override(self, model: Model) -> Any:
        """The model's ``[costs]`` entry under any name it answers to (key, id, a family or
        operator's name; any case, as ``_use`` checks them), or None."""
        names = {name.lower() for name in (model.key, model.id, *model.aliases)}
        return next((rate for name, rate in self.settings.costs.items() if name.lower() in names), None)

    def clip_usd(self, model: Model, seconds: float, usd: Decimal | None) -> Decimal | None:
        """The USD a clip costs: its quote (audio-driven, an avatar's: the per-5 s quote times its units)."""
        if usd is None or model.durations:
            return usd
        return usd * max(1, math.ceil(seconds / UNIT_SECONDS))

    async def price(self, model: Model, inputs: Mapping[str, object], seconds: float) -> Price:
        """The price of a request now: quoted (or the catalog's cost without a quote)."""
        return self.priced(model, seconds, await self.quote_usd(model, inputs))

    def priced(self, model: Model, seconds: float, usd: Decimal | None) -> Price:
        """The price of a clip of ``seconds`` given its quote (None: the catalog's cost)."""
        return Price(self.credits(model, seconds, usd), self.clip_usd(model, seconds, usd))

    def known_price(self, model: Model, inputs: Mapping[str, object], seconds: float) -> int:
        """Credits from the cached quote, else the catalog's cost: for menus, without waiting."""
        return self.credits(model, seconds, self.cached(model, inputs))

    # --- what menus and help texts show -------------------------------------------------

    def probe_inputs(self, model: Model, seconds: int | None = None) -> dict[str, object]:
        """The inputs of a typical request of a model (for prices shown before any request)."""
        params = Params(effect=catalog.EFFECTS[0] if model.kind == "effect" else None,
                        prompt=messages.PROMPT_EXAMPLE if model.takes("prompt") else None,
                        duration=seconds if model.durations else None,
                        has_end_image=model.field("end_image") in model.required,
                        has_audio=model.kind == "avatar")
        return catalog.check_params(model, params)

    def unit_seconds(self, model: Model) -> int:
        """The clip length a model's price is shown for: 5 s, or its shortest above that."""
        if not model.durations:
            return UNIT_SECONDS
        return next((d for d in model.durations if d >= UNIT_SECONDS), model.durations[-1])

    def shown(self, model: Model, seconds: int | None = None) -> int:
        """Credits of a typical request of a model (``seconds`` long), from what is cached."""
        seconds = seconds or self.unit_seconds(model)
        try:
            probe = self.probe_inputs(model, seconds if model.durations else None)
        except catalog.ValidationError:  # its schema wants what no typical request has: no quote
            return self.credits(model, seconds, None)
        return self.known_price(model, probe, seconds)

    async def warm(self) -> None:
        """Quote what menus and help show (each offered model's lengths up to 10 s), so they
        show WaveSpeed's prices without waiting."""
        wanted: list[tuple[Model, int | None]] = []
        for model in self.catalog_now().offered:
            lengths = [d for d in (UNIT_SECONDS, 10) if d in model.durations]
            wanted += [(model, seconds) for seconds in lengths] if lengths else [(model, None)]
        gate = asyncio.Semaphore(QUOTE_AT_ONCE)

        async def one(model: Model, seconds: int | None) -> None:
            try:
                probe = self.probe_inputs(model, seconds)
            except catalog.ValidationError as err:  # menus show its catalog cost (``shown``)
                log.info("model %s: no typical request to quote (%s)", model.id, err)
                return
            async with gate:
                await self.quote_usd(model, probe)

        await asyncio.gather(*(one(model, seconds) for model, seconds in wanted))

    def price_text(self) -> str:
        """Every offered model's price, as help texts and greetings show it."""
        now = self.catalog_now()
        return messages.price_list([(_name(now, model), self.price_of(model)) for kind in catalog.KINDS
                                    for model in now.models_of(kind)])

    def price_of(self, model: Model) -> str:
        """``1 credit`` (fixed length), ``1 credit per 5 s``, or a table by clip length."""
        if not model.durations and model.kind != "avatar":
            return messages.price(self.shown(model), None)
        if isinstance(self._override(model), dict):
            return messages.price_table([(seconds, self.shown(model, seconds)) for seconds in model.durations])
        return messages.price(self.shown(model), self.unit_seconds(model))

    def affordable_audio(self, have: int, max_seconds: float) -> float:
        """Seconds of avatar audio ``have`` credits buy, at most ``max_seconds``; 0: not even 5 s."""
        avatars = self.catalog_now().models_of("avatar")
        unit = self.shown(avatars[0]) if avatars else 0
        if unit <= 0:
            return max_seconds
        return min(max_seconds, float(have // unit * UNIT_SECONDS))

    def _request(self, kind: Kind, model_name: str | None, params: Params) -> tuple[Model, dict[str, object]]:
        """The model a request names and its API inputs; ValidationError when it is refused."""
        now = self.catalog_now()
        model = now.resolve_model(model_name, kind)
        return model, now.check_params(model, params)

    def quote(self, kind: Kind, model_name: str | None, params: Params) -> int:
        """Credits a request would cost from what is known now (an avatar clip: its shortest,
        5 s); ValidationError when the request is refused anyway."""
        model, inputs = self._request(kind, model_name, params)
        return self.known_price(model, inputs, catalog.clip_seconds(model, inputs))

    async def request_price(self, kind: Kind, model_name: str | None, params: Params) -> int:
        """Credits a request costs, quoted now; ValidationError when it is refused anyway."""
        model, inputs = self._request(kind, model_name, params)
        return (await self.price(model, inputs, catalog.clip_seconds(model, inputs))).credits


def _name(now: Catalog, model: Model) -> str:
    return f"/{model.kind}" if len(now.models_of(model.kind)) == 1 else f"/{model.kind} {model.key}"

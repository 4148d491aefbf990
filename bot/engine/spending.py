"""The engine's refusals before any cost that ``bot.spend`` decides: a prompt ``[moderation]``
blocks, a request that would cross a ``[spend]`` cap. ``Engine`` inherits these."""

from __future__ import annotations

import logging

from bot import messages
from bot.catalog import Params
from bot.engine.prices import Price
from bot.jobs import Rejected
from bot.spend import PromptRules, SpendCapReached, SpendCaps

log = logging.getLogger(__name__)


class Spending:
    rules: PromptRules
    spend: SpendCaps

    async def prompt_refusal(self, params: Params) -> Rejected | None:
        """A prompt or negative prompt that ``[moderation]`` blocks: refused, without saying what matched."""
        if await self.rules.blocked((params.prompt, params.negative_prompt)):
            log.info("a prompt was refused by [moderation]")
            return Rejected(messages.PROMPT_BLOCKED)
        return None

    async def cap_refusal(self, place_key: str, price: Price) -> Rejected | None:
        """A request of ``price`` that would cross a ``[spend]`` cap, as things stand (the
        accept's write checks again, authoritatively)."""
        if not self.spend.configured:
            return None
        try:
            await self.spend.check(place_key, self.spend.counted(price))
        except SpendCapReached as err:
            return Rejected(str(err))
        return None

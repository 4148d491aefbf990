"""Inline keyboards and their callback data.

Everything a button needs is in its callback data (at most 64 bytes), so a button
works after a restart with nothing in memory:

==========================  =====================================================
``fx:<owner>:<effect>``     the effect menu of the photo the menu replies to (owner only)
``fxa:<owner>:<effect>``    the /effects menu: asks the owner for a photo
``fxj:<job>:<effect>``      another effect on a delivered job's photo (anyone)
``fxp`` / ``fxap`` / ``fxjp`` ``:<key>:<page>``  another page of those menus
``again:<job>``             the same job again (anyone; the presser pays)
``other:<job>``             opens the ``fxj`` menu for that job
``ask:<job>``               asks the presser for a prompt to animate the job's photo
``hist:<job>[:<owner>]``    posts a past video again (/history); ``<owner>``: the chat
                            identity the list was made for (an anonymous admin's group)
==========================  =====================================================

``<effect>`` is the index in ``catalog.EFFECTS`` (menus from before it was an index
carry the API spelling; both are understood).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot import catalog, messages
from bot.catalog import Params
from bot.engine import Engine
from bot.jobs import Job, JobState

PAGE_SIZE = 12  # effects per keyboard page
ROW = 3  # effects per keyboard row
MENUS = {"fx": "fxp", "fxa": "fxap", "fxj": "fxjp"}  # effect menus -> their page buttons
PAGES = {page: menu for menu, page in MENUS.items()}
PATTERN = r"^(fxp?|fxap?|fxjp?|again|other|ask|hist):"
PROBE_PROMPT = "x"  # any prompt: a prompt's cost does not depend on its words
# A key as the bot writes it: a job id, or a user or chat id (negative for a group). Data is
# the client's word: "--5" or "٣" is no key (str.isdigit and int() would take some of those).
KEY = re.compile(r"-?[0-9]{1,20}", re.ASCII)


@dataclass(frozen=True)
class ButtonData:
    """A pressed button, parsed: ``kind`` (fx, fxp, again…), ``key`` (owner or job), ``value``."""

    kind: str
    key: int
    value: str = ""

    @property
    def page(self) -> int:
        return int(self.value) if self.value.isascii() and self.value.isdigit() else 0

    @property
    def effect(self) -> str:
        """The effect's API spelling (a name the engine refuses if the data was forged)."""
        if self.value.isascii() and self.value.isdigit() and int(self.value) < len(catalog.EFFECTS):
            return catalog.EFFECTS[int(self.value)]
        return self.value


def parse(data: str) -> ButtonData | None:
    kind, _, rest = data.partition(":")
    key, _, value = rest.partition(":")
    if not KEY.fullmatch(key):
        return None
    return ButtonData(kind, int(key), value)


class Menus:
    """Builds the keyboards, with the costs the engine quotes."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def effect_cost(self) -> int:
        return self.engine.quote("effect", None, Params(effect=catalog.EFFECTS[0]))

    def prompt_cost(self) -> int:
        return self.engine.quote("animate", None, Params(prompt=PROBE_PROMPT))

    async def effects(self, menu: str, key: int, page: int = 0) -> InlineKeyboardMarkup:
        """One page of an effect menu, most used effects first, with readable names."""
        names = await self.engine.popular_effects()
        pages = max(1, -(-len(names) // PAGE_SIZE))
        page = min(max(page, 0), pages - 1)
        chunk = names[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]
        buttons = [InlineKeyboardButton(catalog.effect_title(name),
                                        callback_data=f"{menu}:{key}:{catalog.EFFECTS.index(name)}")
                   for name in chunk]
        rows = [buttons[i:i + ROW] for i in range(0, len(buttons), ROW)]
        nav = []
        if page > 0:
            nav.append(InlineKeyboardButton(messages.MENU_BACK, callback_data=f"{MENUS[menu]}:{key}:{page - 1}"))
        if page + 1 < pages:
            nav.append(InlineKeyboardButton(messages.MENU_MORE, callback_data=f"{MENUS[menu]}:{key}:{page + 1}"))
        return InlineKeyboardMarkup(rows + ([nav] if nav else []))

    async def results(self, job: Job) -> InlineKeyboardMarkup | None:
        """The buttons under a delivered video; none when its photo is not kept (a video
        posted again from /history, or ``keep_days = 0``: the buttons could only refuse)."""
        if not await self.engine.media_kept(job):
            return None
        return InlineKeyboardMarkup([
            [InlineKeyboardButton(messages.priced(messages.BUTTON_AGAIN, job.cost),
                                  callback_data=f"again:{job.id}")],
            [InlineKeyboardButton(messages.priced(messages.BUTTON_OTHER_EFFECT, self.effect_cost()),
                                  callback_data=f"other:{job.id}"),
             InlineKeyboardButton(messages.priced(messages.BUTTON_PROMPT, self.prompt_cost()),
                                  callback_data=f"ask:{job.id}")],
        ])

    def history(self, jobs: Sequence[Job], for_chat: int | None = None) -> InlineKeyboardMarkup | None:
        """A button per delivered job, to post its video again; ``for_chat``: the list is
        made for that chat identity, whoever presses its buttons acts as it."""
        owner = "" if for_chat is None else f":{for_chat}"
        rows = [[InlineKeyboardButton(messages.telegram_history_button(job.id, job.label),
                                      callback_data=f"hist:{job.id}{owner}")]
                for job in jobs if job.state == JobState.DONE]
        return InlineKeyboardMarkup(rows) if rows else None

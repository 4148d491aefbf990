"""The one base of the bot's buttons and menus, which are answered by their custom ids.

A ``Keyed`` item's custom id is ``kling:<what>:<id>…`` (``kling:again:42``,
``kling:pick:<channel>:<message>``): discord.py's ``DynamicItem`` rebuilds it from that
id alone (``client.add_dynamic_items``), also after a restart, with nothing kept in
memory. A subclass names ``what`` and its ``keys`` (a ``ByJob`` or ``ByMessage`` mixin
names the keys) and says how its component looks (``KeyedButton``'s label and style,
``EffectsMenu``'s effects); the template, the custom id and ``from_custom_id`` are
made here. A leaf: it imports no other module of this package.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar, Self, TypeVar

import discord

from bot import catalog, messages

ItemT = TypeVar("ItemT", bound="discord.ui.Item[Any]")
Button = discord.ui.Button[discord.ui.View]
Select = discord.ui.Select[discord.ui.View]

MENU_SIZE = 25  # a select holds 25 options
NOTHING = r"(?!)"  # the template of a base that names no ``what``: it matches no custom id


class Keyed(discord.ui.DynamicItem[ItemT], template=NOTHING):
    """A button or menu whose custom id ``kling:<what>:<key>:<key>…`` carries whole numbers."""

    what: ClassVar[str] = ""
    keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        template = NOTHING
        if cls.__dict__.get("what"):  # a concrete item, not a base
            template = ":".join(("kling", re.escape(cls.what), *(rf"(?P<{key}>\d+)" for key in cls.keys)))
        super().__init_subclass__(template=template)

    def __init__(self, *ids: int) -> None:
        assert len(ids) == len(self.keys)
        self.ids = ids
        super().__init__(self.make(":".join(("kling", self.what, *map(str, ids)))))

    def make(self, custom_id: str) -> ItemT:
        """The component this item wraps, with ``custom_id``."""
        raise NotImplementedError

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> Self:
        return cls(*(int(match[key]) for key in cls.keys))


class KeyedButton(Keyed[Button]):
    """A button: its label and style are the subclass's."""

    label: ClassVar[str]
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary

    def make(self, custom_id: str) -> Button:
        return discord.ui.Button(label=self.label, style=self.style, custom_id=custom_id)


class EffectsMenu(Keyed[Select]):
    """A menu of effects by their readable names, each priced ``cost`` (none when rebuilt
    from a custom id: a pick then needs only the value picked)."""

    def __init__(self, *ids: int, effects: Sequence[str] = (), cost: int = 0):
        self.effects, self.cost = effects, cost
        super().__init__(*ids)

    def make(self, custom_id: str) -> Select:
        return discord.ui.Select(
            custom_id=custom_id, placeholder=messages.POPULAR_EFFECTS,
            options=[discord.SelectOption(label=catalog.effect_title(name), value=name,
                                          description=messages.credits(self.cost)) for name in self.effects])


class ByJob:
    """Keyed by a delivered job: ``kling:<what>:<job id>``."""

    keys: ClassVar[tuple[str, ...]] = ("job",)
    ids: tuple[int, ...]

    @property
    def job_id(self) -> int:
        return self.ids[0]


class ByMessage:
    """Keyed by a message with a photo: ``kling:<what>:<channel id>:<message id>``."""

    keys: ClassVar[tuple[str, ...]] = ("channel", "message")
    ids: tuple[int, ...]

    @property
    def channel_id(self) -> int:
        return self.ids[0]

    @property
    def message_id(self) -> int:
        return self.ids[1]

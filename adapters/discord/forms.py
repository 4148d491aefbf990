"""Forms (Discord modals) answered by their custom ids, also after a restart.

discord.py answers a modal's submit only while the ``Modal`` object that was sent is in
memory, and a ``DynamicItem`` cannot be a modal: a deploy between opening a form and
submitting it would leave the submit unanswered ("This interaction failed"). So, like
the buttons, a form's custom id names what it is for (``kling:promptform:42``), and the
client answers every modal submit by that id (``answer``, from ``on_interaction``),
keeping nothing in memory.

A form has one text field. Its value is cut to the field's ``max_length`` on arrival:
Discord's own client enforces it, other clients need not, and the value is echoed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import discord

log = logging.getLogger(__name__)

FIELD = "text"  # the custom id of a form's one text field
NAME_LENGTH = 100  # characters of an effect name (the longest is 30)
SHORT_FIELD = 100  # longer fields are shown as a paragraph

Run = Callable[[discord.Interaction, tuple[int, ...], str], Awaitable[None]]


@dataclass(frozen=True)
class Form:
    """A one-field form whose custom id is ``<prefix>:<id>:<id>…`` (``ids`` names them);
    ``run`` gets the submit, those ids and the text typed."""

    prefix: str
    ids: tuple[str, ...]
    title: str
    label: str
    placeholder: str
    max_length: int
    run: Run

    def custom_id(self, *ids: int) -> str:
        assert len(ids) == len(self.ids)
        return ":".join((self.prefix, *map(str, ids)))

    def parse(self, custom_id: str) -> tuple[int, ...] | None:
        """The ids in a custom id of this form; None when it is not one."""
        head = self.prefix + ":"
        parts = custom_id[len(head):].split(":") if custom_id.startswith(head) else []
        if len(parts) != len(self.ids) or not all(part.isascii() and part.isdigit() for part in parts):
            return None
        return tuple(int(part) for part in parts)

    async def open(self, interaction: discord.Interaction, *ids: int) -> None:
        """Answer ``interaction`` with this form, for ``ids``."""
        modal: discord.ui.Modal = discord.ui.Modal(title=self.title, custom_id=self.custom_id(*ids))
        modal.add_item(discord.ui.TextInput(
            label=self.label, placeholder=self.placeholder, custom_id=FIELD, max_length=self.max_length,
            style=discord.TextStyle.paragraph if self.max_length > SHORT_FIELD else discord.TextStyle.short))
        modal.stop()  # answered by ``answer``: discord.py need not keep the object (it would not survive a restart)
        await interaction.response.send_modal(modal)


async def answer(interaction: discord.Interaction, forms: Iterable[Form]) -> bool:
    """Run the form a modal submit names; False for any other interaction (or form)."""
    if interaction.type is not discord.InteractionType.modal_submit:
        return False
    data: dict[str, Any] = dict(interaction.data or {})
    custom_id = str(data.get("custom_id", ""))
    for form in forms:
        ids = form.parse(custom_id)
        if ids is not None:
            text = _value(data.get("components") or []) or ""
            await form.run(interaction, ids, text[:form.max_length])
            return True
    log.info("a form nobody answers: %s", custom_id)
    return False


def _value(components: list[Any]) -> str | None:
    """The text field's value in a submit's components (in action rows, or labels)."""
    for component in components:
        if not isinstance(component, dict):
            continue
        if component.get("custom_id") == FIELD and "value" in component:
            return str(component["value"])
        inner = component.get("components") or ([component["component"]] if "component" in component else [])
        if (found := _value(inner)) is not None:
            return found
    return None

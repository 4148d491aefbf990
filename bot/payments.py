"""Payments (#18), platform-neutral: the keys that make each charge credit once, the
invoice payload that says which pack was sold for how much, and what the engine hands
back to adapters (``Credited``, ``PaymentRefund``).

A charge's key is its platform's own id for it (a Telegram Stars
``telegram_payment_charge_id``, a Discord entitlement id), so a payment delivered twice,
or to two processes, names the same row of the payments table and credits once. No SQL
here: the store writes (``bot.store``), the credit policy decides (``bot.credits``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.config import Pack
from bot.jobs import Balance, UserRef

__all__ = ["STARS", "Credited", "PaymentRefund", "Purchase", "discord_key", "invoice_payload",
           "payload_promise", "telegram_key"]

STARS = "XTR"  # Telegram's currency code of Stars
PAYLOAD_PREFIX = "kling1"  # the first field of every invoice payload this bot makes
MAX_PAYLOAD_BYTES = 128  # Telegram: an invoice payload is 1-128 bytes
MAX_NAME = 32  # a pack's name, at most (bot.config checks it)
PACKED = "~"  # a name field starting so is packed (below), not the name's UTF-8
CODE_POINT_BITS = 21  # every Unicode code point fits in 21 bits
PLATFORMS = ("telegram", "discord")  # the platforms whose own refunds the engine hears of (``by``)


def telegram_key(charge_id: str) -> str:
    """The payments key of a Telegram Stars charge."""
    return f"telegram:{charge_id}"


def discord_key(entitlement_id: int | str) -> str:
    """The payments key of a Discord entitlement."""
    return f"discord:{entitlement_id}"


def invoice_payload(pack: Pack) -> str:
    """What an invoice carries back to the bot: the pack's name, credits and Stars, at most
    128 bytes of UTF-8. A name whose UTF-8 does not fit (up to 32 characters of 4 bytes
    each) goes packed: its code points in 21 bits each, as base 85 text."""
    return invoice_payload_of(pack.credits, pack.stars, pack.name)


def invoice_payload_of(credits: int, stars: int, name: str) -> str:
    head = f"{PAYLOAD_PREFIX}|{credits}|{stars}|"
    plain = head + name
    if len(plain.encode("utf-8", "surrogatepass")) <= MAX_PAYLOAD_BYTES and not name.startswith(PACKED):
        return plain
    return head + PACKED + _pack(name)


def payload_promise(payload: str) -> tuple[int, int, str] | None:
    """(credits, stars, pack name) an invoice payload of ``invoice_payload`` promises; None
    for anything else (another bot's, a forged or cut one). Whether that pack is still sold
    at that price is ``Engine.check_purchase``'s question."""
    if len(payload.encode("utf-8", "surrogatepass")) > MAX_PAYLOAD_BYTES:
        return None
    parts = payload.split("|", 3)
    if len(parts) != 4 or parts[0] != PAYLOAD_PREFIX:
        return None
    _, credits_text, stars_text, name = parts
    if not (_digits(credits_text) and _digits(stars_text)):
        return None
    if name.startswith(PACKED):
        unpacked = _unpack(name[len(PACKED):])
        if unpacked is None:
            return None
        name = unpacked
    # only the one spelling invoice_payload makes of a pack: anything else was not made here
    if payload != invoice_payload_of(int(credits_text), int(stars_text), name):
        return None
    if not 1 <= len(name) <= MAX_NAME or int(credits_text) < 1:
        return None
    return int(credits_text), int(stars_text), name


def _digits(text: str) -> bool:
    # ASCII digits only (str.isdigit takes "²" too), no sign, no leading zero, a sane size
    return 0 < len(text) <= 9 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")


def _pack(name: str) -> str:
    number = 0
    for char in name:
        number = (number << CODE_POINT_BITS) | ord(char)
    # A fixed size per character count (each count has its own), so the count needs no byte
    # and leading NUL code points survive.
    return base64.b85encode(number.to_bytes(_packed_size(len(name)), "big")).decode()


def _packed_size(characters: int) -> int:
    return (characters * CODE_POINT_BITS + 7) // 8


def _unpack(text: str) -> str | None:
    try:
        raw = base64.b85decode(text)
    except ValueError:
        return None
    count = next((n for n in range(1, MAX_NAME + 1) if _packed_size(n) == len(raw)), None)
    if count is None:
        return None
    number = int.from_bytes(raw, "big")
    if number >> (count * CODE_POINT_BITS):
        return None  # bits beyond the code points: not packed by us
    points = [(number >> (CODE_POINT_BITS * n)) & ((1 << CODE_POINT_BITS) - 1) for n in range(count)][::-1]
    if any(point > 0x10FFFF or 0xD800 <= point <= 0xDFFF for point in points):
        return None
    return "".join(map(chr, points))


@dataclass(frozen=True)
class Purchase:
    """What an adapter hands the engine once the platform says a pack is paid for."""

    key: str  # telegram_key(...) / discord_key(...)
    user: UserRef  # the buyer
    pack: str  # the pack's name
    credits: int
    stars: int | None = None  # Telegram: the amount paid
    sku_id: str | None = None  # Discord: the SKU bought
    details: dict[str, Any] = field(default_factory=dict)  # kept with the payment (payload, provider charge id)


@dataclass(frozen=True)
class Credited:
    """A purchase as the engine took it."""

    new: bool  # False: this key was credited before; nothing was written now (send nothing again)
    balance: Balance  # the buyer's credits after it
    text: str  # to the buyer


@dataclass(frozen=True)
class PaymentRefund:
    """What a refund of a payment did."""

    outcome: Literal["refunded", "already", "unknown"]
    key: str
    user_key: str | None
    removed: int  # purchased credits taken back now
    short: int  # credits of this payment already spent: not taken back (credits never go below zero)
    text: str  # admin-facing: what happened, and the shortfall in words when short > 0
    # of ``short``, credits jobs not yet ended hold: taken back from such a job's refund
    # (``Credits.make_up_shortfalls``), spent if it is delivered
    held: int = 0

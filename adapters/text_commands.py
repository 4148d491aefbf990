"""Parsing of the text after a chat command, shared by the text-based adapters.

``/animate --model master --duration 10 a cat dances --negative blurry, dark``:
options may stand anywhere; ``--negative`` takes the words up to the next option;
every other word is the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot import catalog, messages
from bot.catalog import Params, ValidationError

# option -> (canonical name, takes the rest of the words up to the next option)
_OPTIONS = {
    "--model": ("model", False), "-m": ("model", False),
    "--duration": ("duration", False), "-d": ("duration", False),
    "--guidance": ("guidance", False), "-g": ("guidance", False),
    "--negative": ("negative", True), "--no": ("negative", True),
}


@dataclass
class AnimateArgs:
    model: str | None = None
    params: Params = field(default_factory=Params)


def parse_animate(text: str) -> AnimateArgs:
    """Split ``/animate`` arguments into model, settings and prompt; refuse bad values."""
    words = text.split()
    prompt: list[str] = []
    values: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("-") and len(word) > 1 and not word[1:2].isdigit():
            name = word.lower()
            if name not in _OPTIONS:
                raise ValidationError(messages.unknown_option(word, catalog.animate_options()))
            key, greedy = _OPTIONS[name]
            taken = []
            index += 1
            while index < len(words) and words[index].lower() not in _OPTIONS:
                taken.append(words[index])
                index += 1
                if not greedy:
                    break
            if not taken:
                raise ValidationError(messages.option_needs_value(word, catalog.animate_options()))
            values[key] = " ".join(taken)
            continue
        prompt.append(word)
        index += 1
    return AnimateArgs(
        model=values.get("model"),
        params=Params(
            prompt=" ".join(prompt) or None,
            negative_prompt=values.get("negative"),
            guidance=_number(values["guidance"], "Guidance") if "guidance" in values else None,
            duration=_seconds(values["duration"]) if "duration" in values else None,
        ),
    )


def _number(text: str, label: str) -> float:
    try:
        return float(text.replace(",", "."))
    except ValueError:
        raise ValidationError(messages.not_a_number(label, text)) from None


def _seconds(text: str) -> int:
    cleaned = text.lower().removesuffix("seconds").removesuffix("sec").removesuffix("s").strip()
    if not cleaned.isdigit():
        raise ValidationError(messages.duration_choices(catalog.durations_of("animate"), f"'{text}'"))
    return int(cleaned)

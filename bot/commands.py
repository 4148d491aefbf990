"""Parsing of the text after a chat command, shared by every text-based adapter.

``/animate --model master --duration 10 a cat dances --negative blurry, dark``:
options may stand anywhere; ``--negative`` takes the words up to the next option;
every other word is the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot import catalog
from bot.catalog import Params, ValidationError

# option -> (canonical name, takes the rest of the words up to the next option)
_OPTIONS = {
    "--model": ("model", False), "-m": ("model", False),
    "--duration": ("duration", False), "-d": ("duration", False),
    "--guidance": ("guidance", False), "-g": ("guidance", False),
    "--negative": ("negative", True), "--no": ("negative", True),
}
OPTION_HELP = ("--model v1.6|v2.1|master  --duration 5|10  --guidance 0-1  "
               "--negative <what to avoid>")


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
                raise ValidationError(f"Unknown option {word}. Options: {OPTION_HELP}.")
            key, greedy = _OPTIONS[name]
            taken = []
            index += 1
            while index < len(words) and not (words[index].lower() in _OPTIONS):
                taken.append(words[index])
                index += 1
                if not greedy:
                    break
            if not taken:
                raise ValidationError(f"{word} needs a value. Options: {OPTION_HELP}.")
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
        raise ValidationError(f"{label} must be a number such as 0.5 (got '{text}').") from None


def _seconds(text: str) -> int:
    cleaned = text.lower().removesuffix("seconds").removesuffix("sec").removesuffix("s").strip()
    if not cleaned.isdigit():
        raise ValidationError(f"Duration must be 5 or 10 seconds (got '{text}').")
    return int(cleaned)


def effects_text(columns: int = 4) -> str:
    """All effect names, a few per line, for /effects."""
    names = list(catalog.EFFECTS)
    lines = [", ".join(names[i:i + columns]) for i in range(0, len(names), columns)]
    return f"{len(names)} effects:\n" + "\n".join(lines)

"""Parsing of the text after a chat command, shared by the text-based adapters.

``/animate --model master --duration 10 a cat dances --negative blurry, dark``:
options may stand anywhere; ``--negative`` takes the words up to the next option;
``--sound`` and ``--no-sound`` take no value; every other word is the prompt.
``/effect`` arguments are read the same way, the words being the effect's name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bot import messages
from bot.catalog import BUILT_IN, Catalog, Params, ValidationError
from bot.engine import Engine
from bot.jobs import UserRef

# Numbers users type are ASCII digits only: str.isdigit() and int() also take "²" or "٣".
_WHOLE = re.compile(r"[0-9]{1,4000}", re.ASCII)  # int() takes at most 4300 digits
_JOB_NUMBER = re.compile(r"#?([0-9]{1,4000})", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)", re.ASCII)
LARGEST_JOB_ID = 2**63 - 1  # SQLite's largest integer: no job has a higher number

# option -> (canonical name, takes the rest of the words up to the next option)
_OPTIONS = {
    "--model": ("model", False), "-m": ("model", False),
    "--duration": ("duration", False), "-d": ("duration", False),
    "--guidance": ("guidance", False), "-g": ("guidance", False),
    "--negative": ("negative", True), "--no": ("negative", True),
    "--aspect": ("aspect", False), "-a": ("aspect", False),
}
# options that are a switch: their value is implied
_FLAGS = {"--sound": ("sound", "on"), "--no-sound": ("sound", "off"), "--silent": ("sound", "off")}


@dataclass
class CommandArgs:
    """A generation command's arguments: the model asked for (None: the default) and the settings."""

    model: str | None = None
    params: Params = field(default_factory=Params)


def parse_animate(text: str, offer: Catalog = BUILT_IN) -> CommandArgs:
    """Split ``/animate`` arguments into model, settings and prompt; refuse bad values
    (``offer``: the models on offer, whose options a refusal lists)."""
    prompt, values = _split(text, for_effect=False, offer=offer)
    return CommandArgs(values.get("model"), _params(values, offer, prompt=" ".join(prompt) or None))


def parse_effect(text: str, offer: Catalog = BUILT_IN) -> CommandArgs:
    """``/effect`` arguments: the effect's name as typed (all the words that are no option,
    so a name /effects shows with a space is taken whole). An /animate option with its
    value is kept, for the model's checks to refuse it by name ("effects have no model
    choice"); any other option is refused saying effects take none."""
    words, values = _split(text, for_effect=True, offer=offer)
    return CommandArgs(values.get("model"), _params(values, offer, effect=" ".join(words)))


def _params(values: dict[str, str], offer: Catalog, *, prompt: str | None = None,
            effect: str | None = None) -> Params:
    """The settings the options gave, with the prompt or the effect's name."""
    return Params(prompt=prompt, effect=effect, negative_prompt=values.get("negative"),
                  guidance=_number(values["guidance"], "Guidance") if "guidance" in values else None,
                  duration=_seconds(values["duration"], offer) if "duration" in values else None,
                  sound=values["sound"] == "on" if "sound" in values else None,
                  aspect=values.get("aspect"))


def _split(text: str, *, for_effect: bool, offer: Catalog) -> tuple[list[str], dict[str, str]]:
    """The words that are no option, and each option's value by its canonical name; an
    unknown option or one without a value is refused, listing the options that apply."""
    words = text.split()
    rest: list[str] = []
    values: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word.lower() in _FLAGS:
            key, value = _FLAGS[word.lower()]
            values[key] = value
            index += 1
            continue
        if word.startswith("-") and len(word) > 1 and not word[1:2].isdigit():
            name = word.lower()
            if name not in _OPTIONS:
                raise ValidationError(_option_refusal(word, for_effect, messages.unknown_option, offer))
            key, greedy = _OPTIONS[name]
            taken = []
            index += 1
            while index < len(words) and words[index].lower() not in _OPTIONS and words[index].lower() not in _FLAGS:
                taken.append(words[index])
                index += 1
                if not greedy:
                    break
            if not taken:
                raise ValidationError(_option_refusal(word, for_effect, messages.option_needs_value, offer))
            values[key] = " ".join(taken)
            continue
        rest.append(word)
        index += 1
    return rest, values


def _option_refusal(word: str, for_effect: bool, for_animate: Callable[[str, str], str], offer: Catalog) -> str:
    return messages.effect_takes_no_options(word) if for_effect else for_animate(word, offer.animate_options())


def parse_job_number(text: str) -> int | None:
    """A job number as typed after /cancel ("7" or "#7"); None when it is not one."""
    match = _JOB_NUMBER.fullmatch(text.strip())
    return int(match.group(1)) if match else None


async def cancel_job(engine: Engine, user: UserRef, text: str, usage: str) -> str:
    """The answer to ``/cancel TEXT``: the usage when TEXT is no job number; a number
    beyond any job's is simply a job the user does not have."""
    job_id = parse_job_number(text)
    if job_id is None:
        return usage
    if job_id > LARGEST_JOB_ID:
        return messages.no_such_job(job_id)
    return await engine.cancel(user, job_id)


def parse_whole_number(text: str, *, signed: bool = False) -> int | None:
    """An integer typed in ASCII digits (with a leading minus if ``signed``), else None."""
    digits = text.strip()
    negative = signed and digits.startswith("-")
    if negative:
        digits = digits[1:]
    if not _WHOLE.fullmatch(digits):
        return None
    return -int(digits) if negative else int(digits)


def _number(text: str, label: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise ValidationError(messages.not_a_number(label, text))
    return float(text.replace(",", "."))


def _seconds(text: str, offer: Catalog) -> int:
    cleaned = text.lower().removesuffix("seconds").removesuffix("sec").removesuffix("s").strip()
    if not _WHOLE.fullmatch(cleaned):
        raise ValidationError(messages.duration_choices(offer.durations_of("animate"), f"'{text}'"))
    return int(cleaned)

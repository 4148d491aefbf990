"""The models the simulated account lists, their prices, and the schema check of their inputs.

The listing is WaveSpeed's ``GET /api/v3/models`` shape: the five seed models the bot
ships (bot/catalog/seed_models.json) and newer ones beside this file (newer_models.json),
including models the bot must ignore (text-to-video, video-to-video, not Kling).

Prices follow one formula: ``base_price`` is the price of the default inputs (5 s, sound
off); clips are billed per second (base / 5 * seconds), sound on costs 1.5x; a model
without a duration input (effects, avatar, lip-sync) costs its base price.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from bot.devtools.answers import SimulatedError

HERE = Path(__file__).resolve().parent
LISTING_FILES = (HERE.parent / "catalog" / "seed_models.json", HERE / "newer_models.json")
SOUND_FACTOR = Decimal("1.5")
CENT_FRACTION = Decimal("0.000001")  # quotes are exact to a millionth of a dollar


def load_listing(paths: tuple[Path, ...] = LISTING_FILES) -> list[dict[str, Any]]:
    """The listing entries of these files, in order."""
    return [entry for path in paths for entry in json.loads(path.read_text(encoding="utf-8"))]


def request_schema(entry: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a listing entry's inputs (its first api_schema)."""
    schema: dict[str, Any] = entry["api_schema"]["api_schemas"][0]["request_schema"]
    return schema


class ModelBook:
    """The simulated account's models: listing, scripted base prices and removals, quotes, checks."""

    def __init__(self, listing: list[dict[str, Any]] | None = None) -> None:
        entries = load_listing() if listing is None else listing
        self._entries = {entry["model_id"]: entry for entry in entries}
        self._base = {model_id: Decimal(str(entry["base_price"])) for model_id, entry in self._entries.items()}
        self.removed: set[str] = set()
        self._validators: dict[str, Validator] = {}

    # --- scripting ------------------------------------------------------------

    def set_base_price(self, model_id: str, usd: Decimal | float | str) -> None:
        """Change what a model costs (its listed base_price, and so every quote of it)."""
        self._known(model_id)
        self._base[model_id] = Decimal(str(usd))

    def remove(self, model_id: str) -> None:
        """Take a model off the listing; its submits and quotes then fail as for an unknown model."""
        self._known(model_id)
        self.removed.add(model_id)

    def restore(self, model_id: str) -> None:
        self._known(model_id)
        self.removed.discard(model_id)

    def _known(self, model_id: str) -> None:
        if model_id not in self._entries:
            raise ValueError(f"no model {model_id!r} in the simulator's listing")

    # --- serving --------------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        """The ``GET /api/v3/models`` data: every model still listed, with its current base price."""
        return [self.entry(model_id) for model_id in self._entries if model_id not in self.removed]

    def entry(self, model_id: str) -> dict[str, Any]:
        entry = copy.deepcopy(self._entries[model_id])
        entry["base_price"] = float(self._base[model_id])
        return entry

    def serves(self, model_id: str) -> bool:
        return model_id in self._entries and model_id not in self.removed

    def schema(self, model_id: str) -> dict[str, Any]:
        return request_schema(self._entries[model_id])

    def check_submit(self, model_id: str, body: dict[str, Any]) -> None:
        """Refuse a submit body as WaveSpeed does: 1400 for a missing required input,
        1401 naming the input for any other violation of the model's request schema."""
        for name in self.schema(model_id).get("required", ()):
            if body.get(name) in (None, ""):
                raise SimulatedError(400, 1400, f"missing required parameter: {name}")
        self._check(model_id, body, self._validator(model_id))

    def check_quoted(self, model_id: str, inputs: dict[str, Any]) -> None:
        """A quote's inputs: the schema's rules for the inputs given (a quote needs no media or prompt)."""
        schema = {key: value for key, value in self.schema(model_id).items() if key != "required"}
        self._check(model_id, inputs, validator_for(schema, default=Draft202012Validator)(schema))

    def price(self, model_id: str, inputs: dict[str, Any]) -> Decimal:
        """The USD price of one run of ``model_id`` on these (valid) inputs."""
        base, properties = self._base[model_id], self.schema(model_id).get("properties", {})
        duration = properties.get("duration")
        if duration is None:
            return base
        seconds = Decimal(str(inputs.get("duration", duration.get("default", 5))))
        price = base / 5 * seconds
        if "sound" in properties and inputs.get("sound") is True:
            price *= SOUND_FACTOR
        return price.quantize(CENT_FRACTION).normalize()

    def _validator(self, model_id: str) -> Validator:
        if model_id not in self._validators:
            schema = self.schema(model_id)
            self._validators[model_id] = validator_for(schema, default=Draft202012Validator)(schema)
        return self._validators[model_id]

    def _check(self, model_id: str, body: dict[str, Any], validator: Validator) -> None:
        errors = sorted(validator.iter_errors(body),
                        key=lambda e: (e.validator != "required", [str(part) for part in e.path]))
        if not errors:
            return
        error = errors[0]
        if error.validator == "required":
            given = error.instance if isinstance(error.instance, dict) else {}
            missing = sorted(set(error.validator_value) - set(given)) or ["?"]
            name = ".".join([*(str(part) for part in error.path), missing[0]])
            raise SimulatedError(400, 1400, f"missing required parameter: {name}")
        raise SimulatedError(400, 1401, f"invalid parameter {_field(error, body, self.schema(model_id))}: "
                                        f"{error.message[:200]}")


def _field(error: SchemaError, body: dict[str, Any], schema: dict[str, Any]) -> str:
    """The input an error is about: its path, or the unexpected one for additionalProperties."""
    if error.path:
        return ".".join(str(part) for part in error.path)
    if error.validator == "additionalProperties":
        extra = sorted(set(body) - set(schema.get("properties", {})))
        if extra:
            return extra[0]
    return "body"

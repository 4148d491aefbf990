"""The models on offer: every known model, the ones the operator enabled, their names."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from bot import messages
from bot.catalog import listing as listings
from bot.catalog.checks import check_params
from bot.catalog.model import Kind, Model, Params, ValidationError

log = logging.getLogger(__name__)

DEFAULT_ANIMATE_MODEL = "v2.1"
DEFAULT_CREDIT_USD = Decimal("0.25")  # one credit = $0.25: the seed models keep their old prices
KINDS: tuple[Kind, ...] = ("effect", "animate", "avatar")  # the order help texts introduce them
# Family names a model may also be called by, when it is the best offered one of its family.
FAMILY_PREFERENCE = ("pro", "master", "std")


@dataclass(frozen=True)
class ModelChoice:
    """The operator's choice of models ([models] in the config)."""

    enabled: tuple[str, ...] | None = None  # ids or glob patterns; None: the default set
    default: str = DEFAULT_ANIMATE_MODEL
    names: Mapping[str, str] = field(default_factory=dict)  # short name -> model id


class Catalog:
    """An immutable view of the models: ``models`` every known one, ``offered`` those users may pick."""

    def __init__(self, models: Sequence[Model], offered: Iterable[str], default_animate: str,
                 listed: Iterable[str] | None = None):
        self.models = tuple(models)
        # What WaveSpeed lists now (None: no listing read yet, so nothing is known withdrawn).
        self.listed_ids = frozenset(listed) if listed is not None else None
        offered_ids = set(offered)
        self.offered = tuple(m for m in self.models if m.id in offered_ids)
        self.default_animate = default_animate
        self._by_id = {m.id: m for m in self.models}

    # --- what is offered --------------------------------------------------------------

    def models_of(self, kind: Kind) -> list[Model]:
        return [m for m in self.offered if m.kind == kind]

    def model_keys(self, kind: Kind) -> list[str]:
        """Short names users type for a kind, e.g. ["v1.6", "v2.1", "master"]."""
        return [m.key for m in self.models_of(kind)]

    def durations_of(self, kind: Kind) -> list[int]:
        """Every clip length some offered model of a kind makes, shortest first."""
        return sorted({d for m in self.models_of(kind) for d in m.durations})

    def models_taking(self, option: str) -> list[str]:
        return [m.key for m in self.offered if m.takes(option)]

    def listed(self, model_id: str) -> bool:
        """Whether WaveSpeed still serves a model (True while no listing was ever read)."""
        return self.listed_ids is None or model_id in self.listed_ids

    def offers(self, model_id: str) -> bool:
        return any(m.id == model_id for m in self.offered)

    def animate_options(self) -> str:
        """The /animate text options, as help texts and refusals show them."""
        # aspect ratios in the models' own order (16:9, 9:16, 1:1), each once
        aspects = list(dict.fromkeys(a for m in self.models_of("animate") for a in m.aspects))
        return messages.animate_options(self.model_keys("animate"), self.durations_of("animate"),
                                        sound=bool(self.models_taking("sound")), aspects=aspects)

    def search_models(self, kind: Kind, query: str, limit: int = 25) -> list[Model]:
        """Offered models of a kind whose names contain ``query`` (for autocomplete)."""
        wanted = query.strip().lower()
        return [m for m in self.models_of(kind)
                if not wanted or any(wanted in name.lower() for name in (m.key, m.title, *m.aliases))][:limit]

    # --- finding one -------------------------------------------------------------------

    def model_by_id(self, model_id: str) -> Model:
        """A known model (offered or not: queued jobs of a withdrawn one still need it); a
        model gone from every list stands in as its id's short name."""
        found = self._by_id.get(model_id)
        if found is None:
            key = listings.short_key(model_id)
            return Model(key=key, id=model_id, kind="animate", title=key, aliases=(), inputs=(),
                         required=frozenset(), durations=())
        return found

    def resolve_model(self, name: str | None, kind: Kind) -> Model:
        """The offered model a user named (short name, alias or full id) for a command kind."""
        offered = self.models_of(kind)
        if not offered:
            raise ValidationError(messages.no_models_now(kind))
        if not name:
            wanted = self.default_animate if kind == "animate" else offered[0].key
            return next((m for m in offered if m.key == wanted), offered[0])
        model = self._named(name)
        if model is None or model.kind != kind or model not in offered:
            if len(offered) == 1 and (model is None or model.kind != kind):
                raise ValidationError(messages.no_model_choice(kind, offered[0].title))
            raise ValidationError(messages.unknown_model(name, [m.key for m in offered]))
        return model

    def _named(self, name: str) -> Model | None:
        wanted = name.strip().lower()
        for pool in (self.offered, self.models):  # an offered model wins a shared alias
            found = next((m for m in pool if wanted in (n.lower() for n in (m.key, m.id, *m.aliases))), None)
            if found is not None:
                return found
        return None

    def check_params(self, model: Model, params: Params) -> dict[str, object]:
        """``bot.catalog.check_params``, naming the offered models that take an end image."""
        return check_params(model, params, end_image_models=self.models_taking("end_image"))


def build_catalog(listing: Sequence[Any] | None, choice: ModelChoice = ModelChoice(),
                  credit_usd: Decimal = DEFAULT_CREDIT_USD) -> Catalog:
    """The catalog for a live listing (None: never fetched, the built-in seeds alone)."""
    seeds = listings.models_of_listing(listings.seed_listing(), credit_usd)
    live = listings.models_of_listing(listing or [], credit_usd)
    models = listings.merged(seeds, live)
    # Every id WaveSpeed lists, also of entries this bot cannot read: such a model is not
    # offered, but its queued jobs are not withdrawn from a model WaveSpeed still serves.
    listed = ({str(e.get("model_id")) for e in listing if isinstance(e, Mapping)} if listing is not None
              else None)
    patterns = choice.enabled if choice.enabled is not None else default_enabled(seeds, live)
    offered = [m.id for m in models if (listed is None or m.id in listed) and _matches(m, patterns)]
    if listed is not None and choice.enabled is not None:  # before any listing, a live-only id is no typo
        for pattern in patterns:
            if not any(_matches(m, (pattern,)) for m in models if m.id in listed):
                log.warning("[models] enabled %r matches no model WaveSpeed lists (ids, globs or short names "
                            "such as v3.0-pro; `kling-bot models` shows what is offered)", pattern)
    models = with_family_names(models, choice.names, offered)  # after the offer: a family name follows it
    catalog = Catalog(models, offered, DEFAULT_ANIMATE_MODEL, listed)
    default = catalog._named(choice.default)
    if default is not None and default.kind == "animate" and default.id in offered:
        return Catalog(models, offered, default.key, listed)
    fallback = next(iter(catalog.model_keys("animate")), DEFAULT_ANIMATE_MODEL)
    log.warning("[models] default %r is not an offered animate model: /animate uses %s", choice.default, fallback)
    return Catalog(models, offered, fallback, listed)


def default_enabled(seeds: Sequence[Model], live: Sequence[Model]) -> tuple[str, ...]:
    """The five seed models and the newest Kling image-to-video of each tier the listing has."""
    return (*(m.id for m in seeds), *(m.id for m in listings.newest_per_tier(live)))


def _matches(model: Model, patterns: Iterable[str]) -> bool:
    names = (model.id, model.id.removeprefix(listings.KLING_OWNER), model.key)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def with_family_names(models: Sequence[Model], names: Mapping[str, str],
                      offered: Iterable[str] = ()) -> list[Model]:
    """Models with their family names (``v3``, ``v2.6``, ``o1``, ``turbo``) and the operator's.

    A family name goes to the best offered member of its family (else the best of all), so
    ``v3`` reaches v3.0 standard where the operator offers it and not v3.0 pro."""
    offered_ids = set(offered)
    taken = {n.lower() for m in models for n in (m.key, *m.aliases)}
    extra: dict[str, list[str]] = {}
    for family, members in _families(models).items():
        best = min(members, key=lambda m: (m.id not in offered_ids, _preference(m)))
        if family.lower() not in taken:
            extra.setdefault(best.id, []).append(family)
            taken.add(family.lower())
    for short, model_id in names.items():
        extra.setdefault(model_id, []).insert(0, short)
    if unknown := [short for short, model_id in names.items() if all(m.id != model_id for m in models)]:
        log.warning("[models.names] %s: no such model in the catalog", ", ".join(sorted(unknown)))
    return [replace(m, aliases=(*extra[m.id], *m.aliases), nicknames=tuple(extra[m.id])) if m.id in extra else m
            for m in models]


def _families(models: Sequence[Model]) -> dict[str, list[Model]]:
    found: dict[str, list[Model]] = {}
    for model in models:
        if model.kind != "animate" or "end_image" in model.required:
            continue
        head = model.key.split("-")[0]  # "v3.0", "v2.6", "o1"
        labels = list(dict.fromkeys([head.removesuffix(".0"), head]))  # "v3" before "v3.0", in every process
        if "turbo" in model.key.split("-"):
            labels = [f"{head.removesuffix('.0')}-turbo", "turbo"]
        for label in labels:
            found.setdefault(label, []).append(model)
    return found


def _preference(model: Model) -> tuple[int, tuple[float, ...]]:
    tier = listings.tier_of(model)
    rank = FAMILY_PREFERENCE.index(tier) if tier in FAMILY_PREFERENCE else len(FAMILY_PREFERENCE)
    return rank, tuple(-v for v in listings.version_of(model))


BUILT_IN = build_catalog(None)  # the seeds: for code without an engine (argparse help, the simulator)

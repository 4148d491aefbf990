"""The engine's answers to questions: credits, prices, jobs, history, popular effects, and
the refusals known before anything is downloaded.

Read-only: nothing here changes a job or a balance. ``Engine`` inherits these, so
adapters still ask everything of the one facade.
"""

from __future__ import annotations

import asyncio
import contextlib

from bot import catalog, messages
from bot.catalog import Catalog, Kind, Model, Params, ValidationError, clip_seconds
from bot.config import Settings
from bot.credits import Credits
from bot.engine.controls import Controls
from bot.engine.models import LiveCatalog
from bot.engine.payments import Payments
from bot.engine.prices import UNIT_SECONDS, Prices
from bot.engine.results import Results
from bot.engine.spending import Spending
from bot.jobs import Balance, Job, Press, Rejected, UserRef
from bot.media import billable_seconds
from bot.store import Store

WARM_WAIT = 5.0  # at start, the menus' prices are waited for this long (then quoted as they come)


class Questions(Spending, Controls, Payments):
    """What a chat may ask about a user, a job or the bot's prices (and, from ``Controls``,
    whether they may ask at all: bans and a pause)."""

    settings: Settings
    store: Store
    credits: Credits
    results: Results
    live: LiveCatalog
    prices: Prices
    owner: str
    _warming: asyncio.Future[None] | None = None

    @property
    def catalog(self) -> Catalog:
        """The models on offer now (WaveSpeed's live list, or the built-in one)."""
        return self.live.current

    async def _keep_catalog(self) -> None:
        """Quote what menus show, then keep the catalog fresh (quoting again after each change)."""
        self.live.on_change(self._warm_prices)  # once, however often the engine starts (``on_change``)
        await self.prices.warm()
        await self.live.keep_fresh()

    async def _warm_before_serving(self) -> None:
        """At start: menus, /help and the first requests then show WaveSpeed's prices at once."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.prices.warm(), WARM_WAIT)

    def _warm_prices(self, _new: Catalog) -> None:
        self._warming = asyncio.ensure_future(self.prices.warm())  # kept: a task nobody holds may vanish

    async def balance(self, user: UserRef) -> Balance:
        return await self.credits.balance(user)

    def price_text(self) -> str:
        return self.prices.price_text()

    def quote(self, kind: Kind, model_name: str | None, params: Params) -> int:
        """Credits a request would cost, from the quotes known now; ValidationError when it is refused anyway."""
        return self.prices.quote(kind, model_name, params)

    async def price(self, kind: Kind, model_name: str | None, params: Params) -> int:
        """Credits a request costs, quoted by WaveSpeed now; ValidationError when it is refused anyway."""
        return await self.prices.request_price(kind, model_name, params)

    def model_price(self, model: Model) -> tuple[int, int]:
        """(credits, seconds): what a typical clip of a model costs, from the quotes known now."""
        return self.prices.shown(model), self.prices.unit_seconds(model)

    async def refresh_models(self) -> None:
        """Read WaveSpeed's model list now if it is due (else the stored one), and quote the menus."""
        await self.live.start()
        await self.prices.warm()

    def models_text(self) -> str:
        """/models: each offered model with its short name, what it adds and its price per 5 s."""
        now = self.catalog
        return messages.models_list([
            messages.model_line(model.key, model.nicknames, model.title, model.features, self.prices.price_of(model),
                                model.kind == "animate" and model.key == now.default_animate)
            for kind in catalog.KINDS for model in now.models_of(kind)])

    async def audio_allowance(self, user: UserRef) -> float:
        """Seconds of avatar audio the user can afford now (0: not even 5 s)."""
        return self.prices.affordable_audio((await self.balance(user)).total, self.settings.media.max_audio_seconds)

    async def held_jobs(self) -> list[Job]:
        """The unfinished jobs this process drives: its own and those it took over."""
        return await self.store.claims.held(self.owner)

    async def history(self, user: UserRef, limit: int = 10) -> list[Job]:
        """The user's ended jobs, newest first."""
        return await self.results.history(user, limit)

    async def media_kept(self, job: Job) -> bool:
        """Whether a job's photo is still kept, so its result buttons can work."""
        return await self.results.media_kept(job)

    async def jobs_of(self, user: UserRef) -> list[tuple[Job, int]]:
        """The user's unfinished jobs with their queue positions (0 = running)."""
        return [(job, await self.store.queue_position(job.id)) for job in await self.store.user_jobs(user.key)]

    async def popular_effects(self) -> list[str]:
        """Every effect, most asked for first (the API's order on ties)."""
        counts = await self.store.effect_counts()
        return sorted(catalog.EFFECTS, key=lambda e: -counts.get(e, 0))

    async def usage_since(self, platform: str, since: float, place_key: str,
                    place: object) -> tuple[int, int]:
        """(jobs, credits spent) in one place (e.g. a server) since a moment."""
        return await self.store.usage_since(platform, since, place_key, place)

    async def job_of(self, user: UserRef, job_id: int) -> Job | None:
        """One of the user's jobs by number; None when the user has no such job."""
        job = await self.store.job(job_id)
        return job if job is not None and job.user_key == user.key else None

    async def job_to_post_again(self, press: Press, job_id: int, *, private: bool) -> Job | None:
        """The job a /history press may post again (``Press.may_post_again``); None when
        there is none it may: someone else's, or in a group one made elsewhere."""
        job = await self.store.job(job_id)
        return job if job is not None and press.may_post_again(job, private=private) else None

    async def rerun_refusal(self, press: Press, source_job_id: int) -> Rejected | None:
        """Why a result button of this job can no longer make a video (its photo is gone,
        or the press may not use it: refused alike, revealing nothing), before a menu or a
        form is opened for it; None when it can."""
        job = await self.store.job(source_job_id)
        usable = job is not None and press.may_use(job) and await self.media_kept(job)
        return None if usable else Rejected(messages.SOURCE_GONE)

    async def source_place(self, press: Press, source_job_id: int) -> str | None:
        """The chat or channel the photo of job ``source_job_id`` was sent in, for a press
        that may use that job (the adapter's allow list applies to it); None otherwise."""
        job = await self.store.job(source_job_id)
        return job.place if job is not None and press.may_use(job) else None

    # --- refusals known before anything is downloaded ---------------------------------

    async def precheck(self, user: UserRef, kind: Kind, model_name: str | None,
                 params: Params, *, audio_seconds: float | None = None, place: str = "") -> Rejected | None:
        """Refusals that need no media (banned, paused, bad settings, a blocked prompt, too
        many jobs, no credits, a [spend] cap of the whole bot or of ``place``:
        ``bot.spend.place_key_of``), so an adapter can answer before downloading anything.
        ``accept`` checks again. An avatar's audio length, when the chat tells it before the
        download, is priced too."""
        if refusal := await self.access_refusal(user):
            return refusal
        try:
            model = self.catalog.resolve_model(model_name, kind)
            inputs = self.catalog.check_params(model, params)
        except ValidationError as err:
            return Rejected(str(err))
        if blocked := await self.prompt_refusal(params):
            return blocked
        if busy := await self._too_many_jobs(user):
            return Rejected(busy)
        limit = self.settings.media.max_audio_seconds
        if audio_seconds is not None and billable_seconds(audio_seconds) > limit:
            return Rejected(messages.audio_too_long(audio_seconds, limit))
        seconds = billable_seconds(audio_seconds) if audio_seconds is not None else clip_seconds(model, inputs)
        cost = (price := await self.prices.price(model, inputs, seconds)).credits
        if capped := await self.cap_refusal(place, price):
            return capped
        have = (await self.credits.balance(user)).total
        if have >= cost:
            return None
        if kind != "avatar":
            return self.out_of_credits(user.platform, self.credits.shortfall(cost, have))
        unit = (await self.prices.price(model, inputs, UNIT_SECONDS)).credits
        if audio_seconds is None or have < unit:
            return self.out_of_credits(user.platform, messages.avatar_unaffordable(unit, have))
        return self.out_of_credits(user.platform, messages.audio_costs_too_much(
            audio_seconds, cost, have, await self.audio_allowance(user)))

    async def _too_many_jobs(self, user: UserRef) -> str | None:
        limit = self.settings.quota.max_jobs_per_user
        return None if await self.store.count_active(user.key) < limit else messages.too_many_jobs(limit)

    async def rerun_precheck(self, press: Press, source_job_id: int, *, effect: str | None = None,
                       prompt: str | None = None) -> Rejected | None:
        """Why a result button of this job cannot start a job for the presser (the photo
        is gone or not theirs to use, the effect or prompt, too many jobs, credits), before any public message;
        None when ``rerun`` may try. Neither effect nor prompt: the same job again."""
        if refusal := await self.access_refusal(press.user):
            return refusal
        if gone := await self.rerun_refusal(press, source_job_id):
            return gone
        user = press.user
        if effect is not None:
            return await self.precheck(user, "effect", None, Params(effect=effect))
        if prompt is not None:
            return await self.precheck(user, "animate", None, Params(prompt=prompt))
        source = await self.store.job(source_job_id)
        assert source is not None  # rerun_refusal found it
        if not self.catalog.offers(source.model_id):  # withdrawn or disabled since: accept would name its raw id
            return Rejected(messages.model_not_offered(self.catalog.model_by_id(source.model_id).title))
        if busy := await self._too_many_jobs(user):
            return Rejected(busy)
        have = (await self.credits.balance(user)).total
        return self.out_of_credits(user.platform, self.credits.shortfall(source.cost, have)) \
            if have < source.cost else None

"""The engine's answers to questions: credits, prices, jobs, history, popular effects.

Read-only: nothing here changes a job or a balance. ``Engine`` inherits these, so
adapters still ask everything of the one facade.
"""

from __future__ import annotations

from bot import catalog, messages
from bot.config import Settings
from bot.credits import Credits
from bot.engine import prices
from bot.engine.results import Results
from bot.jobs import Balance, Job, Rejected, UserRef
from bot.store import Store


class Questions:
    """What a chat may ask about a user, a job or the bot's prices."""

    settings: Settings
    store: Store
    credits: Credits
    results: Results

    def balance(self, user: UserRef) -> Balance:
        return self.credits.balance(user)

    def price_text(self) -> str:
        return prices.price_text(self.settings.costs)

    def quote(self, kind: catalog.Kind, model_name: str | None, params: catalog.Params) -> int:
        """Credits a request would cost; ValidationError when it is refused anyway."""
        return prices.quote(kind, model_name, params, self.settings.costs)

    def audio_allowance(self, user: UserRef) -> float:
        """Seconds of avatar audio the user can afford now (0: not even 5 s)."""
        return prices.affordable_audio(self.balance(user).total, self.settings.media.max_audio_seconds,
                                       self.settings.costs)

    def history(self, user: UserRef, limit: int = 10) -> list[Job]:
        """The user's ended jobs, newest first."""
        return self.results.history(user, limit)

    def media_kept(self, job: Job) -> bool:
        """Whether a job's photo is still kept, so its result buttons can work."""
        return self.results.media_kept(job)

    def jobs_of(self, user: UserRef) -> list[tuple[Job, int]]:
        """The user's unfinished jobs with their queue positions (0 = running)."""
        return [(job, self.store.queue_position(job.id)) for job in self.store.user_jobs(user.key)]

    def popular_effects(self) -> list[str]:
        """Every effect, most asked for first (the API's order on ties)."""
        counts = self.store.effect_counts()
        return sorted(catalog.EFFECTS, key=lambda e: -counts.get(e, 0))

    def usage_since(self, platform: str, since: float, place_key: str,
                    place: object) -> tuple[int, int]:
        """(jobs, credits spent) in one place (e.g. a server) since a moment."""
        return self.store.usage_since(platform, since, place_key, place)

    def job_of(self, user: UserRef, job_id: int) -> Job | None:
        """One of the user's jobs by number; None when the user has no such job."""
        job = self.store.job(job_id)
        return job if job is not None and job.user_key == user.key else None

    def rerun_refusal(self, source_job_id: int) -> Rejected | None:
        """Why a result button of this job can no longer make a video (its photo is gone),
        before a menu or a form is opened for it; None when it can."""
        job = self.store.job(source_job_id)
        return None if job is not None and self.media_kept(job) else Rejected(messages.SOURCE_GONE)

"""Finding the task of a submit whose answer never came, instead of guessing.

WaveSpeed has no idempotency key. When a submit times out, is reset, or answers 5xx
or garbage, the task may exist (and be billed) or not. Submitting again could pay
twice; refunding could pay for a video nobody gets. So the bot looks in WaveSpeed's
prediction history for a task of the job's model created inside the submit's time
window that no other job follows. Exactly one: it is this job's, adopted. None once
the history has settled: WaveSpeed provably has no task. Several: the bot does not
guess (a wrong match would show one user another's video) and says so.

Within one process, submits of one model are serialised while such a question is
open (see ``Pipeline``), so the window never holds this process's other tasks.

A webhook delivered to the job's URL is believed only when its task can be the job's
(``could_be_its_task``): a signed delivery of another task replayed to this URL must
neither settle the job nor be adopted. While the history cannot be read, it is asked
again on a growing backoff, until the job's time runs out (then HistoryUnavailable).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bot.config import WaveSpeedSettings
from bot.jobs import Job
from bot.store import Store
from bot.wavespeed import Prediction, WaveSpeedClient, WaveSpeedError

log = logging.getLogger(__name__)

CLOCK_SKEW = 3.0  # seconds WaveSpeed's clock may differ from ours
HISTORY_RETRY = 2.0  # seconds between two looks while the history settles
HISTORY_BACKOFF_CAP = 60.0  # longest wait between two looks at a history that cannot be read
REPORT_GLANCE = 0.25  # seconds between two looks at the job row for its webhook's report


class Ambiguous(Exception):
    """Several unclaimed tasks fit the window: the bot will not pick one."""


class HistoryUnavailable(Exception):
    """The history could not be read before the job ran out of time."""


class Reconciler:
    def __init__(self, client: WaveSpeedClient, store: Store, settings: WaveSpeedSettings,
                 clock: Callable[[], float]):
        self.client = client
        self.store = store
        self.settings = settings
        self.clock = clock

    def window(self, job: Job) -> tuple[float, float]:
        """When the task, if any, was created: from the submit's start to when it went
        unanswered (for a process that died mid-submit: as long as a request may take)."""
        started = job.submit_started_at or job.created_at
        ended = job.submit_ended_at or started + self.settings.request_timeout
        return started - CLOCK_SKEW, ended + CLOCK_SKEW

    async def could_be_its_task(self, job: Job, prediction: Prediction) -> bool:
        """Whether a reported task can be this job's: its own task id when it has one; else
        a task of its model created inside its submit's window that no other job follows or
        was told of by its own webhook (a delivery replayed from another job's URL)."""
        if job.prediction_id:
            return prediction.id == job.prediction_id
        if job.submit_started_at is None:  # no submit went out: it has no task
            return False
        start, end = self.window(job)
        return (prediction.model in ("", job.model_id) and prediction.created_at is not None
                and start <= prediction.created_at <= end
                and not await self.store.prediction_claimed(prediction.id, job.id))

    async def keep_report(self, job_id: int, prediction: Prediction) -> None:
        """A verified webhook: keep the task's end with its job (the store then wakes
        whoever follows it, in any process). A delivery whose task cannot be the job's
        (another job's, another model's, made outside its submit's window: a replay to
        this URL) is ignored, and so is one after another task's was kept. Checked and
        kept in one transaction: no other delivery or process can claim the task between."""
        async with self.store.transaction():
            # One delivery of a task at a time, on any machine: two (at two jobs' URLs, one a
            # replay) must not both find the task unclaimed and both keep it.
            await self.store.lock_user(f"task:{prediction.id}")
            job = await self.store.job(job_id)
            if job is not None and not job.state.finished and not await self.could_be_its_task(job, prediction):
                log.warning("webhook for job %s names task %s, which cannot be its own: ignored",
                            job_id, prediction.id)
                return
            recorded = await self.store.record_result(job_id, prediction.id, prediction.to_data())
        if recorded is None:
            log.info("webhook for job %s (task %s) ignored: no job waits for it, or another task"
                     " was reported to it first", job_id, prediction.id)

    async def find(self, job: Job) -> Prediction | None:
        """The task this job's unconfirmed submit created, or None when WaveSpeed
        provably has none. Raises Ambiguous, or HistoryUnavailable past the job's time."""
        start, end = self.window(job)
        settled_at = end + self.settings.history_settle
        deadline = job.created_at + self.settings.job_timeout
        unreadable = 0  # looks in a row at a history that could not be read
        next_look = self.clock()
        while True:
            if (reported := await self._reported(job)) is not None:
                log.warning("job %s: submit unconfirmed; its webhook named task %s: adopting it",
                            job.id, reported.id)
                return reported
            if self.clock() >= next_look:
                candidates = await self._candidates(job, start, end, deadline)
                unreadable = 0 if candidates is not None else unreadable + 1
                rivals = await self._rivals(job, start, end)
                if candidates is not None and self.clock() >= settled_at and rivals != "in flight":
                    if len(candidates) == 1 and rivals == "none":
                        log.warning("job %s: submit unconfirmed; adopting WaveSpeed task %s found in "
                                    "the history", job.id, candidates[0].id)
                        return candidates[0]
                    if not candidates:
                        log.warning("job %s: submit unconfirmed and no task in WaveSpeed's history: "
                                    "it was not created", job.id)
                        return None
                    if not (self.settings.webhook_url and self.clock() < deadline):
                        log.error("job %s: submit unconfirmed and %d unclaimed tasks fit its window (%s)%s; "
                                  "not guessing", job.id, len(candidates), ", ".join(c.id for c in candidates),
                                  " with another job's submit unconfirmed in it" if rivals != "none" else "")
                        raise Ambiguous()
                    # else the job's own webhook URL will name its task: wait for it
                elif rivals == "in flight" and self.clock() >= deadline:
                    raise Ambiguous()
                next_look = self.clock() + self._pause(unreadable, settled_at, deadline)
            await asyncio.sleep(max(0.05, min(REPORT_GLANCE, next_look - self.clock())))

    def _pause(self, unreadable: int, settled_at: float, deadline: float) -> float:
        """Seconds until the next look at the history: until it settles; while it cannot be
        read, growing (2, 4, 8 … 60 s); else every HISTORY_RETRY. Never past the deadline,
        where one last look decides."""
        now = self.clock()
        if now < settled_at:
            pause = min(HISTORY_RETRY, settled_at - now)
        elif unreadable:
            pause = min(HISTORY_BACKOFF_CAP, HISTORY_RETRY * 2 ** (unreadable - 1))
        else:
            pause = HISTORY_RETRY
        return max(0.05, min(pause, deadline - now)) if now < deadline else pause

    async def _rivals(self, job: Job, start: float, end: float) -> str:
        """Other jobs (of any process) whose submit of this model may have made a task in
        this window: "in flight" while one still waits for its answer (it may yet claim
        its task), "unconfirmed" when one never got it (whose task is whose is unknowable),
        else "none"."""
        now, longest = self.clock(), self.settings.request_timeout + CLOCK_SKEW
        found = "none"
        for started, ended in await self.store.submits_in_window(job.model_id, job.id, start - longest, end):
            if ended is None and now - started < longest:
                return "in flight"
            if (ended or started + self.settings.request_timeout) + CLOCK_SKEW >= start:
                found = "unconfirmed"
        return found

    async def _reported(self, job: Job) -> Prediction | None:
        """The task the job's webhook named, when it can be the job's."""
        fresh = await self.store.job(job.id)
        if fresh is None or not fresh.webhook_result:
            return None
        reported = Prediction.from_data(fresh.webhook_result)
        return reported if await self.could_be_its_task(fresh, reported) else None

    async def _candidates(self, job: Job, start: float, end: float,
                          deadline: float) -> list[Prediction] | None:
        try:
            found = await self.client.history(job.model_id, start, end)
        except WaveSpeedError as err:  # unreadable for now (a 4xx from a proxy included)
            if self.clock() >= deadline:
                raise HistoryUnavailable() from None
            log.warning("job %s: history not readable (%s); will look again", job.id, err)
            return None
        return [p for p in found if p.model in ("", job.model_id)
                and p.created_at is not None and start <= p.created_at <= end
                and not await self.store.prediction_claimed(p.id, job.id)]

"""Following a task at WaveSpeed until its video is ready: webhook first, polls on a plan.

With ``[wavespeed] webhook_url`` set, WaveSpeed reports the task's end to the bot and
``poke`` wakes the job at once; the database is glanced at every second (a webhook
may reach another process of the bot) and a sparse safety poll covers a webhook that
never comes. Without one, result checks follow a ``PollPlan``: sparse until the task's
likely end, dense around it, backing off after; the likely end is learnt from the
jobs before (from the first one on), else the catalog's guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot import catalog, messages
from bot.config import WaveSpeedSettings
from bot.engine.couriers import Couriers
from bot.engine.submit import JobFailed
from bot.jobs import Job, Progress
from bot.store import Store
from bot.wavespeed import AuthError, Prediction, Transient, WaveSpeedClient, WaveSpeedError, backoff

log = logging.getLogger(__name__)

DENSE_GAP = (0.4, 3.0)  # seconds between checks around the likely end: at least, at most
FRESH_SPREAD = 0.5  # without history the end may be half the catalog's guess off either way
EMPTY_RESULT_RECHECKS = 3  # a "completed" answer without a video is checked again this often
WEBHOOK_GLANCE = 1.0  # seconds between two looks at the job row for a webhook's result
# The same, where the store tells of other processes' webhooks itself (a safety net only).
WEBHOOK_GLANCE_HEARD = 15.0
FINISHED_AT_WAVESPEED = ("failed", "cancelled", "timeout")
REFUSALS_BEFORE_GIVING_UP = 3  # 4xx answers to result checks in a row before the job fails
PROGRESS_TICK = 2.0  # seconds between two progress reports while a task runs (couriers throttle)


@dataclass(frozen=True)
class PollPlan:
    """When to check a task: sparse until its likely end, dense around it, backing off after.

    ``expected`` is the likely time from submit to a ready video, ``spread`` how far the
    end may be from it either way, ``max_gap`` the configured poll_interval: no gap
    between two checks is ever longer.
    """

    expected: float
    spread: float
    max_gap: float

    @property
    def dense_gap(self) -> float:
        low, high = DENSE_GAP
        return min(self.max_gap, max(low, min(high, self.spread / 15)))

    def delay(self, elapsed: float) -> float:
        start, end = self.expected - self.spread, self.expected + self.spread
        if elapsed < start:
            gap = max(self.dense_gap, start - elapsed)  # straight to the start of the window
        elif elapsed <= end:
            gap = self.dense_gap
        else:
            gap = max(self.dense_gap, (elapsed - end) / 4)  # late: back off slowly
        return min(self.max_gap, gap)


class Follower:
    def __init__(self, settings: WaveSpeedSettings, store: Store, client: WaveSpeedClient,
                 couriers: Couriers, clock: Callable[[], float]):
        self.settings = settings
        self.store = store
        self.client = client
        self.couriers = couriers
        self.clock = clock
        self._pokes: dict[int, asyncio.Event] = {}
        self._refusals: dict[int, int] = {}  # result checks refused in a row, per job
        self._hint_check: dict[int, bool] = {}  # a webhook said something: check at once
        self._hinted: dict[int, dict[str, Any]] = {}  # the report that last prompted a check

    def poke(self, job_id: int) -> None:
        """A webhook reported this job's task: look at once (0: any job's may have been)."""
        for event in self._pokes.values() if job_id == 0 else filter(None, [self._pokes.get(job_id)]):
            event.set()

    async def plan(self, job: Job) -> PollPlan:
        """The poll plan for a job: from the runs of earlier jobs like it, else the catalog."""
        runs = await self.store.recent_run_seconds(job.model_id, job.inputs.get("duration"))
        if self.settings.expected_run_seconds:  # known in advance (the simulator says)
            expected = self.settings.expected_run_seconds
            spread = max(0.5, 0.2 * expected)
        elif runs:
            expected = statistics.median(runs)
            spread = max(1.0, (max(runs) - min(runs)) / 2 + 0.03 * expected)
        else:
            model = catalog.model_by_id(job.model_id)
            expected = model.expected_seconds * (2 if job.inputs.get("duration") == "10" else 1)
            spread = FRESH_SPREAD * expected
        return PollPlan(expected, spread, self.settings.poll_interval)

    async def follow(self, job: Job) -> tuple[Prediction, float]:
        """Wait for the task's end: its completed prediction (with a video) and when it most
        likely ended (a webhook: now; a poll: halfway since the check before), or JobFailed."""
        plan = await self.plan(job)
        origin = job.submitted_at or job.created_at
        deadline = origin + self.settings.job_timeout
        # With webhooks, the first check only when the webhook is overdue: past the likely end.
        next_check = origin + (plan.expected + plan.spread if self.settings.webhook_url else plan.delay(0))
        empty_answers = 0
        last_check = origin  # when the task was last seen unfinished
        next_report = self.clock()  # progress is reported between checks too: a bar must move
        self._pokes[job.id] = poked = asyncio.Event()
        try:
            while True:
                await self._wait(poked, min(next_check, deadline, next_report))
                prediction = await self._reported(job)
                hinted = self._hint_check.pop(job.id, False)
                polled = prediction is None and (hinted or self.clock() >= min(next_check, deadline))
                if polled:
                    prediction = await self.check(job)
                    elapsed = self.clock() - origin
                    if prediction and prediction.status == "created" and elapsed > plan.expected / 2:
                        origin = self.clock()  # still queued at WaveSpeed: its run starts later
                    next_check = self.clock() + (self._safety_gap(plan) if self.settings.webhook_url
                                                 else plan.delay(self.clock() - origin))
                if prediction and prediction.status == "completed":
                    if prediction.outputs:  # learn the run time without the poll's own lag
                        return prediction, (last_check + self.clock()) / 2 if polled else self.clock()
                    # Paid for: a "completed" answer without a video is asked again first.
                    empty_answers += 1
                    if empty_answers > EMPTY_RESULT_RECHECKS:
                        raise JobFailed(messages.NO_VIDEO)
                    log.warning("job %s: completed without a video; checking again", job.id)
                    next_check = self.clock() + backoff(empty_answers, base=1.0, cap=self.settings.poll_interval)
                    continue
                if prediction and prediction.status in FINISHED_AT_WAVESPEED:
                    raise JobFailed(messages.model_failed(prediction.error or prediction.status))
                if self.clock() >= deadline:
                    raise JobFailed(messages.took_too_long(self.settings.job_timeout))
                if polled and prediction is not None:
                    last_check = self.clock()
                if prediction is not None or self.clock() >= next_report:
                    next_report = self.clock() + PROGRESS_TICK
                    await self.couriers.progress(job, Progress(
                        "generating", elapsed=self.clock() - origin, expected=plan.expected))
        finally:
            self._pokes.pop(job.id, None)
            self._hint_check.pop(job.id, None)
            self._hinted.pop(job.id, None)
            self._refusals.pop(job.id, None)

    def _safety_gap(self, plan: PollPlan) -> float:
        """With webhooks, checks once the webhook is overdue are sparse."""
        return max(self.settings.poll_interval, 4 * plan.dense_gap)

    async def _wait(self, poked: asyncio.Event, until: float) -> None:
        """Sleep until ``until``, a webhook's poke, or (with webhooks) the next glance."""
        timeout = max(0.0, until - self.clock())
        if self.settings.webhook_url:
            timeout = min(timeout, WEBHOOK_GLANCE_HEARD if self.store.hears_other_processes else WEBHOOK_GLANCE)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await poked.wait()
        poked.clear()

    async def _reported(self, job: Job) -> Prediction | None:
        """The task's end as a webhook reported it (to this process or another), when that
        settles it: a video, or a failure. Anything else only prompts a result check."""
        if not self.settings.webhook_url:
            return None
        fresh = await self.store.job(job.id)
        if fresh is None or not fresh.webhook_result:
            return None
        reported = Prediction.from_data(fresh.webhook_result)
        if reported.id != job.prediction_id:
            return None  # about an earlier task of this job
        if (reported.status == "completed" and reported.outputs) or reported.status in FINISHED_AT_WAVESPEED:
            return reported
        if self._hinted.get(job.id) != fresh.webhook_result:  # each such report prompts one check
            self._hinted[job.id] = fresh.webhook_result
            self._hint_check[job.id] = True
        return None

    async def check(self, job: Job) -> Prediction | None:
        """The task's state at WaveSpeed, or None when this check failed; a job fails only
        after several refusals in a row (one 4xx from a proxy must not refund a made video)."""
        try:
            prediction = await self.client.result(job.prediction_id or "", job.result_url)
        except Transient as err:
            log.warning("job %s: result check failed (%s); will check again", job.id, err)
            return None
        except WaveSpeedError as err:
            refusals = self._refusals[job.id] = self._refusals.get(job.id, 0) + 1
            log.warning("job %s: result check refused (%s), %d in a row", job.id, err, refusals)
            if refusals < REFUSALS_BEFORE_GIVING_UP:
                return None
            self._refusals.pop(job.id, None)
            raise JobFailed(messages.ACCOUNT_PROBLEM if isinstance(err, AuthError)
                            else messages.lost_track(err)) from None
        self._refusals.pop(job.id, None)
        return prediction

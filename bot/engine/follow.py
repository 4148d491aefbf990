"""Following a task at WaveSpeed until its video is ready: webhook first, polls on a plan.

With ``[wavespeed] webhook_url`` set, WaveSpeed reports the task's end to the bot and
``poke`` wakes the job at once; the database is glanced at every second (a webhook
may reach another process of the bot) and sparse safety checks cover a webhook that
never comes: never more than ``WEBHOOK_SAFETY_GAP`` apart from the submit on (a task
may fail at any moment, and a fresh bot does not know how long one runs), and one when
the webhook is overdue. Without one, result checks follow a ``PollPlan``: sparse until
the task's earliest likely end, then spread so that each covers an equal share of the
likely ends (dense where earlier runs ended most often), backing off after the latest.
The likely ends are learnt from the jobs before, else the catalog's guess; a job that
started with too few runs to go by re-reads them at each check (a burst of jobs on a
fresh bot learns from the first of them to end).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot import catalog, messages
from bot.config import WaveSpeedSettings
from bot.engine.couriers import Couriers
from bot.engine.submit import JobFailed
from bot.jobs import Job, Progress
from bot.store import Store
from bot.wavespeed import AuthError, Prediction, Transient, WaveSpeedClient, WaveSpeedError, backoff

log = logging.getLogger(__name__)

MIN_GAP = 0.4  # seconds: two checks of one task are never closer than this
WINDOW_GAP = 3.0  # seconds: never longer between two checks inside the window of likely ends
WINDOW_CHECKS = 16  # checks across the likely ends (at least): a job ending mid-window costs about half
FEW_RUNS = 5  # fewer learnt runs than this tell where the ends lie, hardly how they spread
SHAPE_TRUST = 0.5  # how far the checks follow where the learnt runs cluster, rather than evenly
FRESH_SPREAD = 0.5  # without history the end may be half the catalog's guess off either way
RUNS_FRESH_FOR = 1.0  # seconds a job's plan trusts the runs it read (others may end meanwhile)
WEBHOOK_SAFETY_GAP = 25.0  # with webhooks, no task goes longer unchecked: a lost one costs < 30 s
WEBHOOK_GRACE = (1.0, 0.1)  # a webhook is overdue this long past the latest likely end: s, share of expected
EMPTY_RESULT_RECHECKS = 3  # a "completed" answer without a video is checked again this often
WEBHOOK_GLANCE = 1.0  # seconds between two looks at the job row for a webhook's result
# The same, where the store tells of other processes' webhooks itself (a safety net only).
WEBHOOK_GLANCE_HEARD = 15.0
FINISHED_AT_WAVESPEED = ("failed", "cancelled", "timeout")
REFUSALS_BEFORE_GIVING_UP = 3  # 4xx answers to result checks in a row before the job fails
PROGRESS_TICK = 2.0  # seconds between two progress reports while a task runs (couriers throttle)


@dataclass(frozen=True)
class PollPlan:
    """When to check a task, in seconds since its submit.

    The likely ends lie within ``expected`` +- ``spread``; learnt ``runs`` (ascending) say
    how they spread inside (none: evenly). Checks are sparse until the earliest likely
    end, then fall where each covers an equal share of the likely ends (at most
    ``WINDOW_GAP`` apart), and back off slowly after the latest; ``max_gap`` is the
    configured poll_interval: no gap between two checks is ever longer.
    """

    expected: float
    spread: float
    max_gap: float
    runs: tuple[float, ...] = field(default=())

    @classmethod
    def learnt(cls, runs: Sequence[float], max_gap: float) -> PollPlan:
        """The plan from earlier jobs' run times (at least one)."""
        ordered = tuple(sorted(runs))
        median = statistics.median(ordered)
        if len(ordered) < FEW_RUNS:
            return cls(median, max(1.0, (ordered[-1] - ordered[0]) / 2 + 0.03 * median), max_gap)
        plan = cls(median, 0.0, max_gap, ordered)
        low, high = plan._window
        return cls(median, max(median - low, high - median), max_gap, ordered)

    @functools.cached_property
    def _window(self) -> tuple[float, float]:
        """The earliest and the latest likely end."""
        if not self.runs:
            return self.expected - self.spread, self.expected + self.spread
        # past the extremes seen, as far again as between two neighbouring runs on average
        margin = max(MIN_GAP, (self.runs[-1] - self.runs[0]) / len(self.runs))
        return self.runs[0] - margin, self.runs[-1] + margin

    def share_ended(self, elapsed: float) -> float:
        """The share (0..1) of likely ends before ``elapsed``: part where the learnt runs
        ended (a score of runs only sketches the shape), part evenly over the window."""
        low, high = self._window
        evenly = min(1.0, max(0.0, (elapsed - low) / (high - low))) if high > low else float(elapsed >= high)
        if not self.runs:
            return evenly
        count = len(self.runs)
        ends = [low, *self.runs, high]
        shares = [0.0, *((i + 0.5) / count for i in range(count)), 1.0]
        at = bisect.bisect_right(ends, elapsed)
        if at == 0:
            learnt = 0.0
        elif at == len(ends):
            learnt = 1.0
        else:
            before, after = ends[at - 1], ends[at]
            learnt = shares[at - 1] + (shares[at] - shares[at - 1]) * (elapsed - before) / (after - before)
        return SHAPE_TRUST * learnt + (1 - SHAPE_TRUST) * evenly

    def likely_end(self, share: float) -> float:
        """The time by which ``share`` (0..1) of the likely ends have come."""
        low, high = self._window
        if not self.runs:
            return low + (high - low) * share
        for _ in range(40):  # share_ended only grows: halve the interval that holds it
            middle = (low + high) / 2
            low, high = (middle, high) if self.share_ended(middle) < share else (low, middle)
        return high

    @functools.cached_property
    def checks(self) -> tuple[float, ...]:
        """The checks across the window of likely ends, at least MIN_GAP apart: each one
        sees the share of ends since the check before (none is due at the window's start)."""
        low, high = self._window
        count = max(WINDOW_CHECKS, math.ceil((high - low) / WINDOW_GAP - 1e-9))  # a wide window: more
        kept: list[float] = []
        for k in range(1, count + 1):
            moment = max(0.0, self.likely_end(k / count))
            if not kept or moment - kept[-1] >= MIN_GAP:
                kept.append(moment)
        return tuple(kept)

    @property
    def latest(self) -> float:
        """The latest likely end."""
        return self.checks[-1]

    def delay(self, elapsed: float) -> float:
        checks = self.checks
        if elapsed < checks[-1]:
            upcoming = checks[bisect.bisect_right(checks, elapsed)]
            gap = upcoming - elapsed  # before the window: straight to its first check
            if elapsed >= self._window[0]:
                gap = min(gap, WINDOW_GAP)
        else:
            last_gap = checks[-1] - checks[-2] if len(checks) > 1 else MIN_GAP
            gap = max(last_gap, (elapsed - checks[-1]) / 4)  # late: back off slowly
        return min(self.max_gap, max(MIN_GAP, gap))

    def safety_delay(self, elapsed: float) -> float:
        """With webhooks: the wait before the next safety check."""
        grace, share = WEBHOOK_GRACE
        overdue = self.latest + max(grace, share * self.expected)
        if elapsed + MIN_GAP <= overdue < elapsed + WEBHOOK_SAFETY_GAP:
            return overdue - elapsed
        return WEBHOOK_SAFETY_GAP


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
        self._runs: dict[tuple[str, Any], tuple[float, list[float]]] = {}  # (model, duration) -> (read at, runs)

    def poke(self, job_id: int) -> None:
        """A webhook reported this job's task: look at once (0: any job's may have been)."""
        for event in self._pokes.values() if job_id == 0 else filter(None, [self._pokes.get(job_id)]):
            event.set()

    async def plan(self, job: Job) -> PollPlan:
        """The poll plan for a job: from the runs of earlier jobs like it, else the catalog."""
        max_gap = self.settings.poll_interval
        if self.settings.expected_run_seconds:  # known in advance (the simulator says)
            expected = self.settings.expected_run_seconds
            return PollPlan(expected, max(0.5, 0.2 * expected), max_gap)
        if runs := await self._recent_runs(job):
            return _learnt_plan(tuple(runs), max_gap)
        model = catalog.model_by_id(job.model_id)
        expected = model.expected_seconds * (2 if job.inputs.get("duration") == "10" else 1)
        return PollPlan(expected, FRESH_SPREAD * expected, max_gap)

    async def _recent_runs(self, job: Job) -> list[float]:
        """Run times of the latest jobs like this one, read again once RUNS_FRESH_FOR old:
        a job of a burst learns from the first of them to end, in any process."""
        key = _runs_key(job)
        read = self._runs.get(key)
        if read is None or self.clock() - read[0] >= RUNS_FRESH_FOR:
            read = self._runs[key] = (self.clock(), await self.store.recent_run_seconds(*key))
        return read[1]

    async def follow(self, job: Job) -> tuple[Prediction, float]:
        """Wait for the task's end: its completed prediction (with a video) and when it most
        likely ended (a webhook: now; a poll: halfway since the check before), or JobFailed."""
        plan = await self.plan(job)
        webhooks = bool(self.settings.webhook_url)
        # A plan from enough runs is kept: the jobs ending while this one runs are the
        # short ones, and re-reading them would make this job's end look late (with
        # webhooks, its webhook look overdue: the safety checks need no learning).
        learning = not plan.runs and not webhooks
        origin = job.submitted_at or job.created_at
        deadline = origin + self.settings.job_timeout
        next_check = origin + (plan.safety_delay(0) if webhooks else plan.delay(0))
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
                    if learning:  # jobs that ended meanwhile may have taught it more
                        plan = await self.plan(job)
                    elapsed = self.clock() - origin
                    next_check = self.clock() + (plan.safety_delay(elapsed) if webhooks else plan.delay(elapsed))
                if prediction and prediction.status == "completed":
                    if prediction.outputs:  # learn the run time without the poll's own lag
                        self._runs.pop(_runs_key(job), None)  # the next plan reads this run too
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


@functools.lru_cache(maxsize=256)
def _learnt_plan(runs: tuple[float, ...], max_gap: float) -> PollPlan:
    """One plan per set of runs: every job following it shares it (placing its checks
    takes a millisecond or two, too long to repeat at every check of thousands of jobs)."""
    plan = PollPlan.learnt(runs, max_gap)
    _ = plan.checks
    return plan


def _runs_key(job: Job) -> tuple[str, Any]:
    """Jobs whose run times tell about each other's: one model, one clip length."""
    return job.model_id, job.inputs.get("duration")

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
started with too few runs to go by re-reads them at each check. A burst of such jobs (of
one model, followed by one process) learns from itself: until the first of them ends,
each checks half as often inside the window (their ends are all alike: any first one
tells the rest where to look); then the likely ends are those of the burst's own ended
runs and of the runs still going past the moment each was last seen running (a ``Burst``:
survival counts, the late ones are later than the ends seen so far).
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

from bot import messages
from bot.catalog import BUILT_IN, Catalog
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
BURST_GAP = 2 * WINDOW_GAP  # at most between a burst's checks in the window before its first end
BURST_CROWD = 12  # jobs alike at once from which a burst's checks thin out before its first end
BURST_CHECKS = 20  # checks across a burst's likely ends: its window is estimated, wider than the truth early
BURST_SAMPLE = 256  # running jobs a burst's estimate reads at most (the rest are alike)
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
    configured poll_interval: no gap between two checks is ever longer. A ``steady`` plan
    (re-made at every check from an estimate that moves) spaces its checks from the last
    one instead of keeping to its own grid: a grid that shifts would bring checks closer.
    """

    expected: float
    spread: float
    max_gap: float
    runs: tuple[float, ...] = field(default=())
    window_gap: float = WINDOW_GAP
    window_checks: int = WINDOW_CHECKS
    steady: bool = False

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
        count = max(self.window_checks, math.ceil((high - low) / self.window_gap - 1e-9))  # a wide window: more
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
                steady = self.steady and not self.runs and len(checks) > 1
                gap = checks[1] - checks[0] if steady else min(gap, self.window_gap)
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


class Burst:
    """The jobs of one kind (model, clip length) this process follows at once, and the run
    times of those that ended since: how a fresh bot learns from a burst of its own jobs.

    A job still running was last seen so at ``running[job]`` seconds: its end is later.
    The burst's likely ends are taken as even over a window from its earliest end to the
    end that best explains both the ends seen and the runs still going (a censored
    estimate: when most are still running, the window reaches well past the ends seen).
    """

    def __init__(self) -> None:
        self.running: dict[int, float] = {}  # job id -> seconds it was last seen running
        self.ended = 0  # jobs that ended while the burst lasted: how many, the earliest and latest run
        self.earliest, self.latest = math.inf, 0.0
        self._plan: tuple[float, PollPlan | None] = (-math.inf, None)  # (made at, plan)

    def seen(self, job_id: int, elapsed: float) -> None:
        self.running[job_id] = elapsed

    def finished(self, job_id: int, run: float | None) -> None:
        """A job left the burst: ended after ``run`` seconds, or (None) failed or gone."""
        self.running.pop(job_id, None)
        if run is not None:
            self.ended += 1
            self.earliest, self.latest = min(self.earliest, run), max(self.latest, run)

    def plan(self, max_gap: float, now: float) -> PollPlan | None:
        """The plan of its jobs once one of them ended (None before), re-made once
        RUNS_FRESH_FOR old at most: thousands of jobs share one estimate."""
        made, plan = self._plan
        if now - made >= RUNS_FRESH_FOR or (plan is None and self.ended):
            plan = self._estimate(max_gap) if self.ended else None
            self._plan = (now, plan)
        return plan

    def _estimate(self, max_gap: float) -> PollPlan:
        """Even checks from the earliest end seen to the likeliest latest end (the uniform
        window that makes the ends seen and the runs still going the most likely)."""
        low = self.earliest - MIN_GAP
        running = list(self.running.values())
        sample = running[::max(1, len(running) // BURST_SAMPLE)]
        weight = len(running) / len(sample) if sample else 1.0  # each sampled run stands for this many
        going = [seen for seen in sample if seen > low]  # those seen only before ``low`` tell nothing
        high = _likeliest_latest(low, self.ended, going, weight,
                                 max(self.latest, *going, low) + MIN_GAP, low + max(1.0, 0.03 * low))
        return PollPlan((low + high) / 2, (high - low) / 2, max_gap, window_checks=BURST_CHECKS, steady=True)


def _likeliest_latest(low: float, ended: int, going: Sequence[float], weight: float, *floors: float) -> float:
    """The latest end of a uniform window from ``low`` that makes ``ended`` ends and runs
    still ``going`` past these moments (each standing for ``weight``) the most likely."""

    def pull(high: float) -> float:  # > 0: a later ``high`` explains them better
        return weight * sum(1 / (high - seen) for seen in going) - (ended + weight * len(going)) / (high - low)

    high = max(floors)
    if going and pull(high) > 0:
        reach = high + 1.0
        while pull(reach) > 0:
            reach = low + 2 * (reach - low)
        for _ in range(40):  # pull falls as ``high`` grows: halve the interval that holds its root
            middle = (high + reach) / 2
            high, reach = (middle, reach) if pull(middle) > 0 else (high, middle)
    return high


class Follower:
    def __init__(self, settings: WaveSpeedSettings, store: Store, client: WaveSpeedClient,
                 couriers: Couriers, clock: Callable[[], float],
                 catalog_now: Callable[[], Catalog] = lambda: BUILT_IN):
        self.settings = settings
        self.catalog_now = catalog_now
        self.store = store
        self.client = client
        self.couriers = couriers
        self.clock = clock
        self._pokes: dict[int, asyncio.Event] = {}
        self._refusals: dict[int, int] = {}  # result checks refused in a row, per job
        self._hint_check: dict[int, bool] = {}  # a webhook said something: check at once
        self._hinted: dict[int, dict[str, Any]] = {}  # the report that last prompted a check
        self._runs: dict[tuple[str, Any], tuple[float, list[float]]] = {}  # (model, duration) -> (read at, runs)
        self._bursts: dict[tuple[str, Any], Burst] = {}  # (model, duration) -> the jobs followed now

    def poke(self, job_id: int) -> None:
        """A webhook reported this job's task: look at once (0: any job's may have been)."""
        for event in self._pokes.values() if job_id == 0 else filter(None, [self._pokes.get(job_id)]):
            event.set()

    async def plan(self, job: Job, burst: Burst | None = None) -> PollPlan:
        """The poll plan for a job: from the runs of earlier jobs like it, else the catalog;
        with ``burst`` (a job that started knowing too few runs), from the jobs followed
        with it once one of them ended."""
        max_gap = self.settings.poll_interval
        if self.settings.expected_run_seconds:  # known in advance (the simulator says)
            expected = self.settings.expected_run_seconds
            return PollPlan(expected, max(0.5, 0.2 * expected), max_gap)
        if burst is not None and (estimate := burst.plan(max_gap, self.clock())):
            return estimate
        if runs := await self._recent_runs(job):
            return _learnt_plan(tuple(runs), max_gap)
        model = self.catalog_now().model_by_id(job.model_id)
        seconds = int(str(job.inputs.get("duration", model.default_duration)))
        expected = model.expected_seconds * max(1.0, seconds / 5)  # a 10 s clip runs about twice as long
        # Many alike at once: the first of them to end tells all the others where to look,
        # and until then each may check less often (up to half as often from 2 crowds on).
        crowd = len(burst.running) / BURST_CROWD if burst is not None else 0.0
        gap = min(BURST_GAP, max(WINDOW_GAP, WINDOW_GAP * crowd))
        return PollPlan(expected, FRESH_SPREAD * expected, max_gap, window_gap=gap)

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
        # Learning, it counts the runs still going too: its burst's.
        learning = not plan.runs and not webhooks
        origin = job.submitted_at or job.created_at
        burst = self._bursts.setdefault(_runs_key(job), Burst())
        burst.seen(job.id, 0.0)
        if learning:
            plan = await self.plan(job, burst)
        informed = bool(burst.ended)  # the plan knows where the burst's ends begin
        deadline = origin + self.settings.job_timeout
        next_check = origin + (plan.safety_delay(0) if webhooks else plan.delay(0))
        empty_answers = 0
        last_check = origin  # when the task was last seen unfinished
        next_report = self.clock()  # progress is reported between checks too: a bar must move
        self._pokes[job.id] = poked = asyncio.Event()
        try:
            while True:
                await self._wait(poked, min(next_check, deadline, next_report))
                if learning and not informed and burst.ended:  # its burst's first end: look closer now
                    plan, informed = await self.plan(job, burst), True
                    next_check = min(next_check, last_check + plan.delay(last_check - origin))
                prediction = await self._reported(job)
                hinted = self._hint_check.pop(job.id, False)
                polled = prediction is None and (hinted or self.clock() >= min(next_check, deadline))
                if polled:
                    prediction = await self.check(job)
                    elapsed = self.clock() - origin
                    if prediction and prediction.status == "created" and elapsed > plan.expected / 2:
                        origin = self.clock()  # still queued at WaveSpeed: its run starts later
                    if learning:  # jobs that ended meanwhile may have taught it more
                        plan, informed = await self.plan(job, burst), bool(burst.ended)
                    elapsed = self.clock() - origin
                    next_check = self.clock() + (plan.safety_delay(elapsed) if webhooks else plan.delay(elapsed))
                if prediction and prediction.status == "completed":
                    if prediction.outputs:  # learn the run time without the poll's own lag
                        self._runs.pop(_runs_key(job), None)  # the next plan reads this run too
                        ended_at = (last_check + self.clock()) / 2 if polled else self.clock()
                        first = not burst.ended and not webhooks  # (webhooks: nobody polls to learn)
                        # Only an end known to within a few polls teaches: a job taken over
                        # after a restart may have ended long before its first check here.
                        known = not polled or self.clock() - last_check <= 2 * self.settings.poll_interval
                        burst.finished(job.id, ended_at - origin if known else None)
                        for member in burst.running if first else ():  # the others learn where to look
                            self.poke(member)
                        return prediction, ended_at
                    # Paid for: a "completed" answer without a video is asked again first.
                    empty_answers += 1
                    if empty_answers > EMPTY_RESULT_RECHECKS:
                        raise JobFailed(messages.NO_VIDEO, "wavespeed", billed=True)
                    log.warning("job %s: completed without a video; checking again", job.id)
                    next_check = self.clock() + backoff(empty_answers, base=1.0, cap=self.settings.poll_interval)
                    continue
                if prediction and prediction.status in FINISHED_AT_WAVESPEED:
                    raise JobFailed(messages.model_failed(prediction.error or prediction.status), "wavespeed",
                                    billed=False)  # WaveSpeed bills no failed task
                if self.clock() >= deadline:
                    raise JobFailed(messages.took_too_long(self.settings.job_timeout), "timeout")
                if polled and prediction is not None:
                    last_check = self.clock()
                    burst.seen(job.id, last_check - origin)
                if prediction is not None or self.clock() >= next_report:
                    next_report = self.clock() + PROGRESS_TICK
                    await self.couriers.progress(job, Progress(
                        "generating", elapsed=self.clock() - origin, expected=plan.expected))
        finally:
            burst.finished(job.id, None)
            if not burst.running and self._bursts.get(_runs_key(job)) is burst:
                del self._bursts[_runs_key(job)]
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
                            else messages.lost_track(err), "wavespeed") from None
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

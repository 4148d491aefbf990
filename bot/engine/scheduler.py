"""The durable wake loop: queued rows in the store, a few slots at WaveSpeed, one task per job.

Like a timer table (RoboDanny's reminders), the queue lives in the database and
one loop wakes when something changes or the earliest retry falls due, so nothing
is lost by a restart. ``[wavespeed] max_concurrent`` jobs of this process are at
WaveSpeed at once; the others wait, and their chats are told their place in line.

Several processes may share the database. A job is driven only by the process that
holds its claim (``owner``), a lease this loop renews every third of
``[storage] lease_seconds``; a process that finds a job whose lease ran out (its
owner died, or stopped and handed it over) takes it over when it serves the job's
platform: ``generate`` serves the command line's, so it follows a job an interrupted
``generate`` left at WaveSpeed to the end. ``start(resume=False)`` drives only the
jobs the process accepts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bot.engine.couriers import Couriers
from bot.engine.joblog import job_logged
from bot.engine.pipeline import Pipeline
from bot.jobs import Job, JobState, Progress
from bot.store import Store, StoreOffline

log = logging.getLogger(__name__)

# Rows one store call reads or writes at most when a pass covers every job of the process
# (lease renewals, queue places): SQLite answers on the event loop, and 10,000 rows in one
# call would block every chat for a good part of a second.
ROWS_PER_CALL = 500
# Waiting jobs no process holds (a front's) told their new place as the line moves: the
# first this many. Further back a job keeps the place its "queued" answer gave until it
# comes this far; telling every waiting job on every claim would be hundreds of chat
# edits each time (Telegram allows about 30 messages a second).
WAITING_PLACES_TOLD = 20
PAUSE_LOOK = 1.0  # seconds between looks at a pause (held in the store) while paused


class Scheduler:
    def __init__(self, store: Store, pipeline: Pipeline, couriers: Couriers, *,
                 max_concurrent: int, lease_seconds: float, clock: Callable[[], float],
                 paused: Callable[[], Awaitable[bool]] | None = None):
        self.store = store
        self.paused = paused  # while it says so (an admin's pause), queued jobs wait
        self.pipeline = pipeline
        self.couriers = couriers
        self.owner = pipeline.owner
        self.max_concurrent = max_concurrent
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._at_wavespeed: set[int] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[None]] = set()  # queue-position notices
        self._take_over = True
        self._take_over_of: str | None = None  # whose jobs alone are taken over (None: anyone's)
        self._stopping = False
        self._reachable_since: float | None = float("-inf")  # None while the store is unreachable

    async def start(self, *, resume: bool = True, user_key: str | None = None) -> None:
        """Start the loop; with resume, also take over unfinished jobs whose owner is gone
        and adopt queued jobs no live process holds (a front's), only that user's with
        ``user_key``."""
        self._take_over = resume
        self._take_over_of = user_key
        self._stopping = False
        await self._keep_claims()
        # Claims are renewed by a task of their own: nothing the loop waits for (a slow
        # chat, a busy database) may let a live process's leases run out.
        self._renewer = asyncio.create_task(self._renew_forever(), name="kling-leases")
        self._loop_task = asyncio.create_task(self._run(), name="kling-scheduler")

    async def stop(self, *, before_release: Callable[[], Awaitable[None]] | None = None) -> None:
        """Cancel every job task and hand this process's unfinished jobs over at once
        (``before_release`` runs while they are still ours, with nothing driving them)."""
        self._stopping = True
        tasks = [t for t in [self._loop_task, self._renewer, *self._tasks.values(), *self._side_tasks] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = self._renewer = None
        if before_release is not None:
            await before_release()
        try:
            await self.store.claims.release(self.owner)
        except StoreOffline as err:  # the leases lapse by themselves
            log.warning("leases not handed over: the database is unreachable (%s)", err)

    def wake(self) -> None:
        """Something changed (a job was queued or left WaveSpeed): look again now."""
        self._wake.set()

    def is_driving(self, job_id: int) -> bool:
        return job_id in self._tasks

    def lease_until(self) -> float:
        return self.clock() + self.lease_seconds

    async def _renew_forever(self) -> None:
        while not self._stopping:
            # While the database is away, try often: this process's leases are renewed as
            # soon as it is back, before any other process may think them lapsed.
            await asyncio.sleep(self.lease_seconds / 3 if self._reachable_since is not None
                                else min(1.0, self.lease_seconds / 3))
            try:
                await self._keep_claims()
            except StoreOffline as err:  # a database restarting: the next turn tries again
                self._reachable_since = None
                log.warning("lease renewal failed: the database is unreachable (%s)", err)
            except Exception:  # a busy database now must not end renewals for good
                log.exception("lease renewal failed")
            self.wake()  # the sparse safety poll: a wake-up from another process may be lost

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._fill_slots()
                sleep = await self._sleep_time()
            except StoreOffline as err:  # the database is restarting: the renewals' wake-ups retry
                log.warning("scheduler: the database is unreachable (%s)", err)
                sleep = self.lease_seconds / 3
            except Exception:  # a bug here must not stop every future job
                log.exception("scheduler error")
                sleep = self.lease_seconds / 3
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
            # that arrives as the event is set, and stop() would wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep):
                    await self._wake.wait()
            self._wake.clear()

    async def _sleep_time(self) -> float | None:
        if len(self._at_wavespeed) >= self.max_concurrent:
            return None  # a freed slot wakes the loop
        if self.paused is not None and await self.paused():
            return PAUSE_LOOK  # a resume in another process is seen by looking again
        due = await self.store.claims.next_due(self.owner, self.couriers.platforms, self.clock(),
                                               adopt=self._take_over, user_key=self._take_over_of)
        return None if due is None else max(0.05, due - self.clock())

    async def _keep_claims(self) -> None:
        """Renew this process's leases, drop jobs it lost, drive again its own that nothing
        drives (their driver stopped on an unreachable database), take over orphaned ones."""
        held = await self._renew_all()
        if self._reachable_since is None:
            self._reachable_since = self.clock()
        for job_id in set(self._tasks) - held.keys():
            job = await self.store.job(job_id)
            driver = self._tasks.get(job_id)  # it may have ended while the job was read
            if driver is not None and job is not None and not job.state.finished and job.owner != self.owner:
                log.warning("job %s: lost to another process; stopping here", job_id)
                driver.cancel()
        # Queued ones are claimed by the loop: only a started job can be left undriven.
        for job_id in sorted(job_id for job_id, state in held.items()
                             if state != JobState.QUEUED and job_id not in self._tasks):
            job = await self.store.job(job_id)  # read after its driver ended: as it left it
            if (job is not None and job.owner == self.owner and not job.state.finished
                    and job.state != JobState.QUEUED and job_id not in self._tasks):
                log.warning("job %s: held here but driven by nothing; driving it again", job_id)
                self._resume(job)
        # After an outage every lease looks lapsed: live processes renew within a lease of
        # its end, so take nothing over before then (a video uploaded meanwhile is not
        # posted again by another process).
        settled = self.clock() - self._reachable_since >= self.lease_seconds
        if self._take_over and self.couriers.platforms and settled:
            for job in await self.store.claims.take_over(self.owner, self.couriers.platforms, self.lease_until(),
                                                   self.clock(), user_key=self._take_over_of):
                self._resume(job)

    async def _renew_all(self) -> dict[int, JobState]:
        """Renew every lease of this process, ``ROWS_PER_CALL`` at a time with a turn of the
        event loop between; the jobs held, with their states."""
        lease_until, after = self.lease_until(), 0
        held: dict[int, JobState] = {}
        while True:
            renewed = await self.store.claims.renew(self.owner, lease_until, after=after, limit=ROWS_PER_CALL)
            if not renewed:  # not "fewer than asked": a job may end while its batch is renewed
                return held
            held.update(renewed)
            after = max(renewed)
            await asyncio.sleep(0)

    def _resume(self, job: Job) -> None:
        log.info("job %s taken over in state %s", job.id, job.state.value)
        if job.state == JobState.QUEUED or job.id in self._tasks:
            return  # queued: claimed below like any job of ours
        if job.state in (JobState.SUBMITTING, JobState.PROCESSING):
            self._at_wavespeed.add(job.id)
        self._spawn(job)

    async def _fill_slots(self) -> None:
        if self.paused is not None and await self.paused():
            return  # queued jobs wait; the ones started go on
        started = False
        while len(self._at_wavespeed) < self.max_concurrent:
            job = await self.store.claims.claim_next(self.owner, self.couriers.platforms, self.lease_until(),
                                                     self.clock(), exclude=set(self._tasks),
                                                     adopt=self._take_over, user_key=self._take_over_of)
            if job is None:
                break
            self._at_wavespeed.add(job.id)
            self._spawn(job)
            started = True
        if started:  # in the background: a slow chat must not hold up the queue
            task = asyncio.create_task(self.announce_positions())
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)

    async def announce_positions(self) -> None:
        """Tell every queued job of this process's its place in line; and, when it adopts
        jobs no process holds (a front's), theirs (``_announce_waiting``)."""
        position, after = 0, 0
        while True:
            page = await self.store.claims.own_queued(self.owner, after=after, limit=ROWS_PER_CALL)
            for job in page:
                position += 1
                await self.couriers.progress(job, Progress("queued", position=position))
            if len(page) < ROWS_PER_CALL:
                break
            after = page[-1].id
            await asyncio.sleep(0)  # SQLite answers at once: the loop runs between pages
        # Not for `generate` (it adopts one user's jobs): others' places are not its to show.
        if self._take_over and self._take_over_of is None and self.couriers.platforms:
            await self._announce_waiting()

    async def _announce_waiting(self) -> None:
        """Tell the first ``WAITING_PLACES_TOLD`` queued jobs no process holds their new
        places in line. Whoever changed the line (claimed a job, cancelled one) calls this;
        each lower place of a job is marked in the store by one process only, so two
        workers that claimed at once do not both post it, and a place older than one
        already shown is never posted."""
        page = await self.store.claims.waiting_places(self.owner, self.couriers.platforms, self.clock(),
                                                      after=0, limit=WAITING_PLACES_TOLD)
        fresh = await self.store.claims.mark_places({job.id: place for job, place in page}, self.clock())
        for job, place in page:
            if job.id in fresh:
                await self.couriers.progress(job, Progress("queued", position=place))

    def _spawn(self, job: Job) -> None:
        if job.id in self._tasks:  # claimed and found held, undriven, at once: one driver
            return
        self._tasks[job.id] = asyncio.create_task(self._drive(job), name=f"kling-job-{job.id}")

    async def _drive(self, job: Job) -> None:
        with job_logged(job.id):  # this task's lines (and its children's) carry the job's id
            await self._drive_logged(job)

    async def _drive_logged(self, job: Job) -> None:
        try:
            await self.pipeline.drive(job, self._release)
        except StoreOffline as err:
            # Its state is what the database last took; the claim stays ours, and the next
            # lease renewal that reaches the database drives the job again from there.
            log.warning("job %s: the database is unreachable (%s); to be driven again", job.id, err)
        except Exception:
            # Not even its failure could be recorded (e.g. the database stayed locked):
            # give the claim up, so this process or another takes the job up again.
            log.exception("job %s: stopped unexpectedly; handing it back", job.id)
            with contextlib.suppress(Exception):
                await self.store.claims.release_job(job.id, self.owner)
        finally:
            self._tasks.pop(job.id, None)
            self._release(job.id)

    def _release(self, job_id: int) -> None:
        if job_id in self._at_wavespeed:
            self._at_wavespeed.discard(job_id)
            self._wake.set()

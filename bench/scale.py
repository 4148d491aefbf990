"""Past one machine: front and worker processes sharing one PostgreSQL.

    python bench/scale.py [--quick]
    python bench/scale.py --phase workers|reencode|credits|latency|inflight [--quick]

Every figure comes from whole processes: a throw-away PostgreSQL server (``initdb`` +
``pg_ctl`` in a temporary folder, as the tests start it: ``tests/postgres.py``'s
``LocalServer``, here with its durability settings back to PostgreSQL's defaults), the
WaveSpeed simulator in a process of its own (``harness.py serve``), and the bot's
engines each in its own process (this file with ``--role``). Nothing is timed inside
a test.

  workers   jobs per minute completed by 1, 2 and 4 worker processes, each with
            ``max_concurrent`` 4, on simulator jobs of 5 s (so the figure shows how well
            claims spread work, not the CPU). A front process (an engine started with
            ``start(drive=False)``) accepts N = 4 workers x 4 slots x 3 rounds = 48 jobs
            at once; workers (``engine.start()``, a recording courier for the jobs'
            platform) adopt them with ``claim_next(adopt=True)``, woken by LISTEN/NOTIFY.
            Jobs/min = N / (last delivery - first accept); the ratio is against one
            worker (goals: >= 1.9x with 2, >= 3.6x with 4). poll_interval 1 s.
  reencode  the same with videos that must be re-encoded: the simulator serves a 10 s
            1080p clip (17 MiB, ``reencode.py``'s source) and the worker's courier fits
            it under 10 MiB x 0.98 with ``bot.videofit.fit_video`` in a thread, one
            video at a time per process, as the chat couriers do (their paid lane).
            N = 16 (4 workers x 4 slots). Prints the workers' CPU seconds over the
            wall time (the cores they used): on 2 cores the ceiling is about 2x.
  credits   credit reserve+commit pairs per second on PostgreSQL, each as the engine
            does it (as ``load.py``'s credits phase does for SQLite): accept's own
            reservation (``Credits.reserve_job``: job limit check, reserve, job row,
            ledger row), then the engine's settle step (``Pipeline.settle_done``: job
            done, credits committed, media dropped; one statement). Each process has
            made one pair for each of its 100 users before the clock starts, as a
            running bot has seen its users: it knows their rows, so an accept is one
            statement (``Store.reserve_if_unchanged``) unless another process or path
            wrote the row since. From 1 process and from 4 at once (started
            together), each one pair after another, and each with 4 pairs at a time
            (as a process accepts: ``ACCEPTS_AT_ONCE``). Measured twice: with the
            server's default ``synchronous_commit = on`` (each commit waits for its WAL
            flush) and with ``off`` for the database (a crash may lose the last commits,
            never consistency: what SQLite's ``synchronous = NORMAL``, the bot's setting,
            also allows). Goals: >= 1,500 from one process, >= 3,000 from 4.
  latency   accept -> started on another process: a front accepts 200 jobs, one every
            0.1 s; two idle workers (max_concurrent 64, 1 s simulator jobs) claim them.
            From the moment the front's ``accept()`` returns to the moment the worker's
            ``claim_next`` returns the job (the worker notes it; same machine clock),
            p50 / p99 (goals < 50 ms / < 200 ms). Negative: claimed before the front's
            answer was back (the NOTIFY goes at commit; accept reads its answer after).
  inflight  one process with 10,000 jobs in flight, on SQLite and on PostgreSQL
            (``load.py``'s inflight machinery, parametrised): 10,000 users each send a
            photo (768x768 JPEG, 24 KB) at once (started 200 to a turn of the event loop,
            as sockets would deliver them; ``--role inflight --burst`` starts all 10,000
            in one turn, which costs asyncio ~130 ms before any bot code runs); the
            simulator's jobs last an hour, so none ends. Peak RSS once all are accepted and max_concurrent (2, as
            configured) are at WaveSpeed (goal < 300 MB; VmHWM: ``ru_maxrss`` would keep the
            parent's peak) and the longest event-loop stall while they arrive and are
            submitted (goal < 100 ms), with the event loop's own CPU during the worst
            stall (as much as the stall: the loop was busy; far less: the process
            waited for a core on a busy machine).

``--quick``: fewer jobs (workers 32, reencode 8, credits 1,000 pairs, latency 50,
inflight 2,000). The machine's cores and load average are printed with the figures: a
shared machine's wall times say as much about its neighbours as about the code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import harness
from harness import Recorder, StallMeter, bench_settings, cpu_seconds, quantile, simulator_process

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bot.catalog import Params  # noqa: E402
from bot.config import Settings  # noqa: E402
from bot.devtools.clips import sample_photo  # noqa: E402
from bot.engine import Engine  # noqa: E402
from bot.jobs import GenerationRequest, Job, UserRef, Video  # noqa: E402
from bot.videofit import fit_video  # noqa: E402
from tests.postgres import LocalServer, find_bindir  # noqa: E402

PLATFORM = "bench"
SLOTS = 4  # max_concurrent of every worker in the workers and reencode phases
MIB = 1024 * 1024
ARRIVALS_PER_TURN = 200  # inflight: accepts started per turn of the event loop


def emit(**event: Any) -> None:
    """One JSON line to the parent process."""
    print(json.dumps(event), flush=True)


class CpuStallMeter(StallMeter):
    """A stall meter that also notes how much CPU this thread (the event loop's) used during
    the worst stall: about all of it, the loop was busy; much less, the process waited for
    a core (a machine busy with other work)."""

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.worst_cpu = 0.0
        while True:
            before, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(self.tick)
            late = loop.time() - before - self.tick
            if late > self.worst:
                self.worst, self.worst_cpu = late, time.thread_time() - cpu


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: on Linux a child
    keeps its parent's peak across fork and exec (the parent here made a 1080p clip)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return harness.peak_rss_mb()


def engine_settings(base: str, url: str, workdir: Path, **wavespeed: Any) -> Settings:
    settings = bench_settings(base, workdir, **wavespeed)
    return replace(settings, storage=replace(settings.storage, url=url))


# --- the processes (--role) ---------------------------------------------------------------

class FittingCourier(Recorder):
    """Notes each delivery (JSON line to the parent); with ``limit``, first re-encodes the
    video under it as the chat couriers do: in a thread, one video at a time."""

    def __init__(self, limit: int, folder: Path):
        super().__init__()
        self.limit = limit
        self.folder = folder
        self.lane = asyncio.Semaphore(1)

    async def deliver(self, job: Job, video: Video) -> None:
        fitted = 0
        if self.limit and video.size > self.limit:
            dest = self.folder / f"fit-{job.id}-{secrets.token_hex(4)}.mp4"
            async with self.lane:
                if not await asyncio.to_thread(fit_video, video.path, self.limit, dest):
                    raise RuntimeError(f"job {job.id}: could not fit the video")
            fitted = dest.stat().st_size
            dest.unlink()
        emit(delivered=job.id, at=time.time(), size=video.size, fitted=fitted)
        await super().deliver(job, video)

    async def fail(self, job: Job, reason: str) -> None:
        emit(failed=job.id, reason=reason)
        await super().fail(job, reason)


async def until_go() -> None:
    """Wait for the parent's "go" line (processes started one by one begin together)."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def until_stdin_closes() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def role_worker(args: argparse.Namespace, workdir: Path) -> None:
    """An engine that drives jobs: claims, submits, follows, downloads, delivers."""
    settings = engine_settings(args.sim, args.url, workdir, max_concurrent=args.slots, poll_interval=1.0)
    engine = await Engine.from_settings(settings)
    engine.register(PLATFORM, FittingCourier(int(args.fit_limit), workdir))
    claim_next = engine.store.claims.claim_next

    async def noting_claims(*call: Any, **options: Any) -> Job | None:  # the claim as the scheduler makes it
        job = await claim_next(*call, **options)
        if job is not None:
            emit(claimed=job.id, at=time.time())
        return job

    engine.store.claims.claim_next = noting_claims  # type: ignore[method-assign]
    cpu = cpu_seconds()
    await engine.start()
    emit(ready=engine.owner)
    await until_stdin_closes()
    await engine.close()
    emit(cpu=cpu_seconds() - cpu, rss_mb=peak_rss_mb())


async def role_front(args: argparse.Namespace, workdir: Path) -> None:
    """An engine that accepts jobs and drives none (``start(drive=False)``): ``--jobs``
    jobs at once, or one every ``--spacing`` seconds."""
    engine = await Engine.from_settings(engine_settings(args.sim, args.url, workdir))
    await engine.start(drive=False)
    photo = sample_photo()

    async def accept(n: int) -> None:
        await asyncio.sleep(n * args.spacing)
        called = time.time()
        answer = await engine.accept(_request(n, photo))
        returned = time.time()
        if not hasattr(answer, "job"):
            raise RuntimeError(f"refused: {answer.text}")
        emit(accepted=answer.job.id, called=called, returned=returned)

    emit(ready=engine.owner)
    await until_go()
    await asyncio.gather(*(accept(n) for n in range(args.jobs)))
    emit(all_accepted=True)
    await until_stdin_closes()
    await engine.close()


def _request(n: int, photo: bytes) -> GenerationRequest:
    """``load.py``'s request: the hula effect, from user n. (Made here: importing load.py
    at the first accept would stall the event loop for the imports' ~300 ms.)"""
    return GenerationRequest(UserRef(PLATFORM, f"user{n}"), "effect", photo, Params(effect="hula"))


async def role_credits(args: argparse.Namespace, workdir: Path) -> None:
    """Reserve+commit pairs on a never-started engine (its store, credit policy and settle
    step are the real ones), ``--tasks`` at a time, after the parent's "go"."""
    engine = await Engine.from_settings(engine_settings("http://127.0.0.1:9", args.url, workdir))
    credits = engine.credits
    users = [UserRef(PLATFORM, f"{args.prefix}{n}") for n in range(100)]

    async def pair(user: UserRef) -> None:
        now = time.time()
        reserved, _ = await credits.reserve_job(user, 1, {  # Engine._queue's reservation, without the photo
            "platform": PLATFORM, "reply_to": {}, "model_id": harness.EFFECT_MODEL, "kind": "effect",
            "inputs": {"effect_scene": "hula"}, "label": "hula", "state": "processing",
            "created_at": now, "updated_at": now, "owner": engine.owner})
        await engine.pipeline.settle_done(reserved.job)  # done, commit, media dropped: one statement

    for user in users:  # the users have used the bot on this process before, as for a running bot
        await pair(user)
    emit(ready=engine.owner)
    await until_go()

    async def pairs(lane: int) -> None:
        for n in range(lane, args.pairs, args.tasks):
            await pair(users[n % len(users)])

    started, cpu = time.time(), cpu_seconds()
    await asyncio.gather(*(pairs(lane) for lane in range(args.tasks)))
    emit(start=started, end=time.time(), pairs=args.pairs, cpu=cpu_seconds() - cpu)
    await engine.close()


async def role_inflight(args: argparse.Namespace, workdir: Path) -> None:
    """``load.py``'s inflight phase for ``--jobs`` jobs on the store ``--url`` names."""
    photo = sample_photo()
    with simulator_process(job_seconds=3600) as base:
        settings = engine_settings(base, args.url or str(workdir / "bot.sqlite"), workdir)
        target = min(args.jobs, settings.wavespeed.max_concurrent)
        engine = await Engine.from_settings(settings)
        engine.register(PLATFORM, Recorder())
        await engine.start()
        meter = CpuStallMeter()
        rss_before = peak_rss_mb()
        try:
            meter.start()
            started = time.perf_counter()
            accepted = await _arrivals(engine, photo, args.jobs, args.jobs if args.burst else ARRIVALS_PER_TURN)
            arrival, arrival_stall = time.perf_counter() - started, await meter.stop()
            arrival_stall_cpu = meter.worst_cpu
            meter.start()
            deadline = time.perf_counter() + 180
            while (await _states(engine)).get("processing", 0) < target and time.perf_counter() < deadline:
                await asyncio.sleep(0.2)
            submitting, submit_stall = time.perf_counter() - started - arrival, await meter.stop()
            meter.start()
            cpu = cpu_seconds()
            await asyncio.sleep(args.steady)
            steady_cpu, steady_stall = (cpu_seconds() - cpu) / args.steady, await meter.stop()
            states, rss = await _states(engine), peak_rss_mb()
        finally:
            await engine.close()
    emit(jobs=args.jobs, backend="postgresql" if args.url else "sqlite", photo_kb=len(photo) / 1024,
         max_concurrent=settings.wavespeed.max_concurrent, states=states, rss_mb=rss, rss_before_mb=rss_before,
         arrival_s=arrival, arrival_stall_ms=arrival_stall * 1000, arrival_stall_cpu_ms=arrival_stall_cpu * 1000,
         load=os.getloadavg()[0], submit_s=submitting,
         submit_stall_ms=submit_stall * 1000, steady_s=args.steady, steady_cpu=steady_cpu,
         steady_stall_ms=steady_stall * 1000,
         accept_p50_ms=quantile(accepted, 0.5) * 1000, accept_p95_ms=quantile(accepted, 0.95) * 1000)


async def _arrivals(engine: Engine, photo: bytes, jobs: int, per_turn: int) -> list[float]:
    """Every accept at once, started ``per_turn`` to a turn of the event loop as sockets
    deliver them (10,000 tasks started in one turn block it ~130 ms by themselves:
    asyncio's cost of starting a task, before any of the bot's code runs)."""
    tasks: list[asyncio.Task[float]] = []
    for first in range(0, jobs, per_turn):
        tasks += [asyncio.create_task(_timed_accept(engine, n, photo))
                  for n in range(first, min(jobs, first + per_turn))]
        await asyncio.sleep(0)
    return list(await asyncio.gather(*tasks))


async def _timed_accept(engine: Engine, n: int, photo: bytes) -> float:
    started = time.perf_counter()
    answer = await engine.accept(_request(n, photo))
    if not hasattr(answer, "job"):
        raise RuntimeError(f"refused: {answer.text}")
    return time.perf_counter() - started


async def _states(engine: Engine) -> dict[str, int]:
    """Jobs by state, straight from either backend (a bench may read the tables)."""
    sql = "select state, count(*) from jobs group by state"
    db: Any = engine.store.db
    if hasattr(db, "pool"):  # PostgreSQL
        return {row[0]: int(row[1]) for row in await db.fetch(sql)}
    return {state: int(count) for state, count in db.execute(sql).fetchall()}


ROLES = {"worker": role_worker, "front": role_front, "credits": role_credits, "inflight": role_inflight}


# --- the parent: the server, the processes, the figures ------------------------------------

class Server:
    """A throw-away PostgreSQL cluster with PostgreSQL's default durability (the tests'
    ``LocalServer`` turns fsync and synchronous_commit off for speed)."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("PostgreSQL server binaries not found: apt-get install postgresql")
        self.local = LocalServer(bindir)
        self.local.init()
        with (self.local.data / "postgresql.conf").open("a") as conf:
            conf.write("fsync = on\nsynchronous_commit = on\nfull_page_writes = on\nshared_buffers = 128MB\n")
        self.local.start()
        self.version = asyncio.run(self._fetch("select version()"))

    async def _fetch(self, sql: str) -> Any:
        conn = await asyncpg.connect(self.local.url())
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    def database(self, *settings: str) -> str:
        """A fresh empty database (the first engine migrates it); ``settings`` like
        ``synchronous_commit = off`` apply to its every connection."""
        name = f"bench_{secrets.token_hex(4)}"

        async def create() -> None:
            conn = await asyncpg.connect(self.local.url())
            try:
                await conn.execute(f"create database {name}")
                for setting in settings:
                    await conn.execute(f"alter database {name} set {setting}")
            finally:
                await conn.close()

        asyncio.run(create())
        url = self.local.url(name)
        asyncio.run(_migrate(url))  # once, before any process races to it
        return url

    def cpu(self) -> float:
        """CPU seconds the server's processes have used so far (ended backends included:
        the postmaster reaps them)."""
        clock = os.sysconf("SC_CLK_TCK")
        postmaster = int((self.local.data / "postmaster.pid").read_text().split()[0])
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid, ppid = int(stat.parent.name), int(fields[1])
                if pid == postmaster:
                    total += sum(int(x) for x in fields[11:15]) / clock  # its own and its reaped children's
                elif ppid == postmaster:
                    total += sum(int(x) for x in fields[11:13]) / clock
        return total

    def remove(self) -> None:
        self.local.remove()


async def _migrate(url: str) -> None:
    from bot.store.postgres import PostgresStore

    store = await PostgresStore.open(url, listen=False)
    await store.close()


class Child:
    """One ``--role`` process; its JSON lines arrive in ``events``."""

    def __init__(self, role: str, *options: str):
        self.role = role
        self.options = options
        self.events: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--role", self.role, *self.options,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ready.wait(), 120)

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                self.events.append(event)
                if "ready" in event:
                    self._ready.set()
        self._ready.set()

    def send(self, line: str) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    async def finish(self, within: float = 120) -> None:
        """Close its stdin (its cue to stop) and wait for it to end."""
        assert self.process is not None and self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            await self._reader

    def of(self, key: str) -> list[dict[str, Any]]:
        return [event for event in self.events if key in event]


@contextlib.asynccontextmanager
async def children(*made: Child) -> AsyncIterator[list[Child]]:
    try:
        await asyncio.gather(*(child.start() for child in made))
        yield list(made)
    finally:
        await asyncio.gather(*(child.finish() for child in made if child.process), return_exceptions=True)


async def run_workers(url: str, sim: str, workers: int, jobs: int, fit_limit: int, within: float) -> dict[str, Any]:
    """A front accepts ``jobs`` at once; ``workers`` processes drive them to delivery."""
    common = ["--url", url, "--sim", sim]
    front = Child("front", *common, "--jobs", str(jobs))
    pool = [Child("worker", *common, "--slots", str(SLOTS), "--fit-limit", str(fit_limit)) for _ in range(workers)]
    load_before = os.getloadavg()[0]
    async with children(front, *pool):
        front.send("go")
        deadline = time.monotonic() + within
        while sum(len(w.of("delivered")) + len(w.of("failed")) for w in pool) < jobs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers: not all {jobs} jobs ended within {within:.0f} s")
            await asyncio.sleep(0.1)
    first = min(e["called"] for e in front.of("accepted"))
    last = max(e["at"] for w in pool for e in w.of("delivered"))
    failed = sum(len(w.of("failed")) for w in pool)
    cpu = sum(e["cpu"] for w in pool for e in w.of("cpu"))
    claimed = {e["claimed"]: e["at"] for w in pool for e in w.of("claimed")}
    cycle = [e["at"] - claimed[e["delivered"]] for w in pool for e in w.of("delivered") if e["delivered"] in claimed]
    return {"workers": workers, "jobs": jobs, "failed": failed, "seconds": last - first,
            "per_minute": (jobs - failed) / (last - first) * 60, "cpu": cpu, "cores": cpu / (last - first),
            "spread": [len(w.of("delivered")) for w in pool], "load": load_before,
            "cycle_p50": quantile(cycle, 0.5), "cycle_max": max(cycle, default=float("nan")),
            "first_claim": min(claimed.values()) - first,
            "fitted_mib": max((e["fitted"] for w in pool for e in w.of("delivered")), default=0) / MIB}


def phase_scaling(server: Server, quick: bool, reencode: bool) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if reencode:
            jobs, fit_limit = (8 if quick else 16), int(10 * MIB * 0.98)
            clip = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "source.mp4"
            from reencode import make_clip

            made = time.monotonic()
            make_clip(clip, seconds=10, width=1920, height=1080, fps=24)
            print(f"  (source clip: {clip.stat().st_size / MIB:.1f} MiB, made in {time.monotonic() - made:.0f} s)",
                  flush=True)
            sim = stack.enter_context(simulator_process(job_seconds=5, video_file=clip))
        else:
            jobs, fit_limit = (4 * SLOTS * (2 if quick else 3)), 0
            sim = stack.enter_context(simulator_process(job_seconds=5))
        runs = []
        for workers in (1, 2, 4):
            run = asyncio.run(run_workers(server.database(), sim, workers, jobs, fit_limit, within=900))
            print(f"  {workers} worker(s): {run['jobs']} jobs in {run['seconds']:.1f} s, "
                  f"{run['per_minute']:.0f}/min, spread {run['spread']}, workers' CPU {run['cpu']:.1f} s "
                  f"({run['cores']:.2f} cores), claim -> delivered p50 {run['cycle_p50']:.2f} s, "
                  f"max {run['cycle_max']:.2f} s, "
                  f"first claim {run['first_claim'] * 1000:.0f} ms after the first accept, "
                  f"load average before {run['load']:.1f}", flush=True)
            runs.append(run)
    return {"reencode": reencode, "runs": runs}


async def run_credits(server: Server, url: str, processes: int, pairs: int, tasks: int) -> dict[str, Any]:
    made = [Child("credits", "--url", url, "--pairs", str(pairs), "--tasks", str(tasks),
                  "--prefix", f"p{n}-") for n in range(processes)]
    async with children(*made):
        server_cpu = server.cpu()
        for child in made:
            child.send("go")
        while sum(len(c.of("end")) for c in made) < processes:
            await asyncio.sleep(0.05)
        server_cpu = server.cpu() - server_cpu
    ends = [e for c in made for e in c.of("end")]
    span = max(e["end"] for e in ends) - min(e["start"] for e in ends)
    total = pairs * processes
    return {"processes": processes, "tasks": tasks, "pairs": total, "seconds": span, "rate": total / span,
            "client_ms": sum(e["cpu"] for e in ends) / total * 1000, "server_ms": server_cpu / total * 1000,
            "load": os.getloadavg()[0]}


def phase_credits(server: Server, quick: bool) -> dict[str, Any]:
    pairs = 1000 if quick else 3000
    runs = []
    for commit in ("on", "off"):
        for processes, tasks in ((1, 1), (1, 4), (4, 1), (4, 4)):
            url = server.database(f"synchronous_commit = {commit}")
            run = asyncio.run(run_credits(server, url, processes, pairs, tasks)) | {"synchronous_commit": commit}
            print(f"  synchronous_commit {commit}, {processes} process(es) x {tasks} at a time: "
                  f"{run['pairs']} pairs in {run['seconds']:.2f} s = {run['rate']:.0f}/s; CPU per pair: bot "
                  f"{run['client_ms']:.2f} ms, PostgreSQL {run['server_ms']:.2f} ms; load {run['load']:.1f}",
                  flush=True)
            runs.append(run)
    return {"runs": runs}


async def run_latency(url: str, sim: str, jobs: int, spacing: float) -> dict[str, Any]:
    common = ["--url", url, "--sim", sim]
    front = Child("front", *common, "--jobs", str(jobs), "--spacing", str(spacing))
    workers = [Child("worker", *common, "--slots", "64") for _ in range(2)]
    async with children(front, *workers):
        await asyncio.sleep(1.0)  # the workers' first look found nothing: they sleep until woken
        front.send("go")
        deadline = time.monotonic() + jobs * spacing + 120
        while sum(len(w.of("claimed")) for w in workers) < jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        while not front.of("all_accepted") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    returned = {e["accepted"]: e for e in front.of("accepted")}
    claimed = {e["claimed"]: e["at"] for w in workers for e in w.of("claimed")}
    after_return = [claimed[j] - e["returned"] for j, e in returned.items() if j in claimed]
    after_call = [claimed[j] - e["called"] for j, e in returned.items() if j in claimed]
    accept = [e["returned"] - e["called"] for e in returned.values()]
    return {"jobs": jobs, "claimed": len(after_return), "after_return": after_return, "after_call": after_call,
            "accept": accept, "spread": [len(w.of("claimed")) for w in workers]}


def phase_latency(server: Server, quick: bool) -> dict[str, Any]:
    with simulator_process(job_seconds=1) as sim:
        run = asyncio.run(run_latency(server.database(), sim, 50 if quick else 200, 0.1))
    ms = [x * 1000 for x in run["after_return"]]
    print(f"  {run['claimed']} of {run['jobs']} claimed (by worker: {run['spread']}); accept return -> claim "
          f"p50 {quantile(ms, 0.5):.1f} ms, p99 {quantile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms", flush=True)
    return run


def phase_inflight(server: Server, quick: bool) -> dict[str, Any]:
    jobs = 2000 if quick else 10_000
    runs = []
    for url in ("", server.database()):
        done = subprocess.run([sys.executable, __file__, "--role", "inflight", "--url", url, "--jobs", str(jobs),
                               "--steady", "5" if quick else "10"], stdout=subprocess.PIPE, text=True, check=True)
        run = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {run['backend']}: {run['jobs']} jobs, peak RSS {run['rss_mb']:.0f} MB, stall arriving "
              f"{run['arrival_stall_ms']:.0f} ms ({run['arrival_s']:.0f} s), submitting "
              f"{run['submit_stall_ms']:.0f} ms, waiting {run['steady_stall_ms']:.0f} ms; {run['states']}",
              flush=True)
        runs.append(run)
    return {"runs": runs}


# --- the report ------------------------------------------------------------------------------

def _line(what: str, value: str, goal: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("met" if met else "NOT met")
    print(f"  {what:64}{value:>14}   {goal:10}{verdict}")


def report_scaling(result: dict[str, Any]) -> None:
    runs = {run["workers"]: run for run in result["runs"]}
    one = runs[1]["per_minute"]
    what = "re-encoded videos (10 s 1080p, 17 MiB -> 10 MiB)" if result["reencode"] else "5 s jobs"
    print(f"Jobs per minute, {what}, {runs[1]['jobs']} jobs, max_concurrent {SLOTS} per worker")
    goals = {2: 1.9, 4: 3.6}
    for workers, run in runs.items():
        ratio = run["per_minute"] / one
        goal = None if result["reencode"] or workers == 1 else goals[workers]
        _line(f"{workers} worker(s): jobs/min (spread {run['spread']}, {run['cores']:.2f} cores used)",
              f"{run['per_minute']:.{0 if run['per_minute'] >= 100 else 1}f} ({ratio:.2f}x)",
              f">= {goal}x" if goal else "",
              None if goal is None else ratio >= goal)
    if result["reencode"]:
        print(f"  (this machine: {os.cpu_count()} cores; CPU-bound work cannot scale past them: "
              f"about {os.cpu_count()}x at best)")


def report_credits(result: dict[str, Any]) -> None:
    print("Credit reserve+commit pairs per second on PostgreSQL")
    for run in result["runs"]:
        goal = 1500 if run["processes"] == 1 else 3000
        _line(f"synchronous_commit {run['synchronous_commit']}: {run['processes']} process(es), "
              f"{run['tasks']} pair(s) at a time each", f"{run['rate']:.0f}/s", f">= {goal:,}", run["rate"] >= goal)
    cpu = min(run["client_ms"] + run["server_ms"] for run in result["runs"])
    print(f"  CPU per pair, bot + PostgreSQL: {cpu:.2f} ms at best, so {os.cpu_count()} cores could do "
          f"{os.cpu_count() * 1000 / cpu:,.0f} pairs/s if nothing else ran")


def report_latency(run: dict[str, Any]) -> None:
    ms = [x * 1000 for x in run["after_return"]]
    print(f"Accept -> started on another process, {run['jobs']} jobs 0.1 s apart, 2 idle workers")
    _line("p50 (from accept() returning on the front to claim_next on a worker)", f"{quantile(ms, 0.5):.1f} ms",
          "< 50 ms", quantile(ms, 0.5) < 50)
    _line("p99", f"{quantile(ms, 0.99):.1f} ms", "< 200 ms", quantile(ms, 0.99) < 200)
    called = [x * 1000 for x in run["after_call"]]
    _line("  from accept() being called: p50 / p99",
          f"{quantile(called, 0.5):.0f}/{quantile(called, 0.99):.0f} ms")
    accept = [x * 1000 for x in run["accept"]]
    _line("  accept() itself: p50 / p99", f"{quantile(accept, 0.5):.0f}/{quantile(accept, 0.99):.0f} ms")


def report_inflight(result: dict[str, Any]) -> None:
    for run in result["runs"]:
        print(f"{run['jobs']:,} jobs in flight in one process, {run['backend']}, max_concurrent "
              f"{run['max_concurrent']}, {run['photo_kb']:.0f} KB photos; {run['states']}")
        _line("peak RSS", f"{run['rss_mb']:.0f} MB", "< 300 MB", run["rss_mb"] < 300)
        _line("  of which before the first job (imports, engine)", f"{run['rss_before_mb']:.0f} MB")
        _line(f"longest event-loop stall while they arrive ({run['arrival_s']:.0f} s)",
              f"{run['arrival_stall_ms']:.0f} ms", "< 100 ms", run["arrival_stall_ms"] < 100)
        _line("  the event loop's CPU during that stall (load average then)",
              f"{run['arrival_stall_cpu_ms']:.0f} ms ({run['load']:.1f})")
        _line(f"longest event-loop stall while submitted ({run['submit_s']:.1f} s)",
              f"{run['submit_stall_ms']:.0f} ms", "< 100 ms", run["submit_stall_ms"] < 100)
        _line(f"then waiting ({run['steady_s']:g} s): stall; CPU, share of one core",
              f"{run['steady_stall_ms']:.0f} ms; {run['steady_cpu'] * 100:.0f} %")
        _line("  accept p50 / p95", f"{run['accept_p50_ms']:.0f}/{run['accept_p95_ms']:.0f} ms")


PHASES = {
    "workers": (lambda server, quick: phase_scaling(server, quick, reencode=False), report_scaling),
    "reencode": (lambda server, quick: phase_scaling(server, quick, reencode=True), report_scaling),
    "credits": (phase_credits, report_credits),
    "latency": (phase_latency, report_latency),
    "inflight": (phase_inflight, report_inflight),
}


@contextlib.contextmanager
def postgres() -> Iterator[Server]:
    server = Server()
    try:
        yield server
    finally:
        server.remove()


def whole_run(phases: list[str], quick: bool) -> None:
    started = time.monotonic()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with postgres() as server:
        print(f"PostgreSQL: {server.version} (throw-away cluster, default durability)")
        print(f"machine: {os.cpu_count()} cores ({affinity} usable), load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        results = {}
        for name in phases:
            print(f"[{name}]", flush=True)
            results[name] = PHASES[name][0](server, quick)
    print("\nkling-bot past one machine" + (" (--quick: smaller counts)" if quick else ""))
    for name in phases:
        PHASES[name][1](results[name])
    print(f"\nload average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
          f"wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, to try it fast")
    parser.add_argument("--phase", choices=PHASES, action="append", help="run only this phase (repeatable)")
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)  # the child processes
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--sim", default="", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--spacing", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=SLOTS, help=argparse.SUPPRESS)
    parser.add_argument("--fit-limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="user", help=argparse.SUPPRESS)
    parser.add_argument("--steady", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--burst", action="store_true", help="inflight: every accept started in one loop turn")
    args = parser.parse_args()
    if args.role:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(ROLES[args.role](args, Path(tmp)))
    else:
        whole_run(args.phase or list(PHASES), args.quick)

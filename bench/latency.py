"""Result checks and completion -> delivered latency: kling-bot against the official SDK.

    python bench/latency.py [--quick] [--jobs 6] [--history-jobs 1] [--lengths 20,60,120]
                            [--warm-jobs 10] [--only lengths|spread|lost-webhook]

Three scenarios, all at once (``--only`` runs one):

lengths (below)  every client on constant-length jobs of 20, 60 and 120 s.
spread           60 s jobs (--quick: 12 s) whose run times spread +-7 s (+-12 %), uniformly
                 at random per task (the simulator's ``run_spread``): kling-bot fresh (one
                 new database for all ``--jobs``), its first jobs (each on its own new
                 database: no history at all, not even from a sibling that ended first),
                 warm (after ``--warm-jobs`` finished jobs on that database), with webhooks,
                 and the SDK with its defaults; ratios against the SDK.
lost-webhook     5 s jobs on a fresh bot with webhooks configured, every webhook lost
                 (the simulator drops them): seconds from each task's end to delivery.

For each job length (20, 60, 120 s; --quick: 4, 8, 12 s) one in-process simulator runs
``--jobs`` effect jobs through each client, all clients and lengths at once:

  kling-bot polling, fresh    the real Engine on a new empty database (no run-time history)
  kling-bot polling, history  the same, after ``--history-jobs`` finished job(s) of that length
  kling-bot webhooks          the Engine with [wavespeed] webhook_url/webhook_listen/webhook_secret
                              ("n/a" while the engine has no such settings)
  official SDK (defaults)     ``wavespeed.Client(base_url=...).run()`` in a thread per job, then
                              the output fetched with requests (the SDK returns only URLs)
  1 s poller                  aiohttp: submit, then GET the result every second, then download

The bot runs with default settings except the simulator's URL, a temporary database,
ample credits and max_concurrent high enough that no job waits in the bot's queue.

GETs/job counts the simulator's logged GETs of ``.../{task id}/result`` per job.
Latency is from the task's completion (the simulator completes a task at its
``created`` + ``job_seconds``, on the same monotonic clock as this process; each
task's ``created`` is moved back by a random 0-1 s so run times vary) to the
moment the client holds the video: kling-bot's courier ``deliver()`` call, or the end
of the output download. Every simulator serves one prepared clip, so no client pays
for the simulator rendering a video. The SDK and the poller send the photo inline
as a data URI (the SDK's own upload endpoint is not simulated); kling-bot uploads it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import harness
from harness import EFFECT_MODEL, Recorder, StallMeter, bench_settings, has_webhooks, mean, quantile

from bot.catalog import Params
from bot.devtools.clips import sample_photo, zoom_clip
from bot.devtools.simulator import Simulator
from bot.engine import Engine
from bot.jobs import GenerationRequest, UserRef

FRESH, HISTORY, WEBHOOKS, SDK, POLLER = ("kling-bot polling, fresh", "kling-bot polling, history",
                                         "kling-bot webhooks", "official SDK (defaults)", "1 s poller")
VARIANTS = (FRESH, HISTORY, WEBHOOKS, SDK, POLLER)
FIRST, WARM = "kling-bot first jobs", "kling-bot polling, warm"
SPREAD_VARIANTS = (FRESH, FIRST, WARM, WEBHOOKS, SDK)
RUN_SPREAD = 7 / 60  # the spread scenario: run times vary +-12 % (+-7 s of 60 s), per task
LOST_WEBHOOK_SECONDS = 5.0
STAGGER = 0.25  # seconds between two jobs' starts within a variant
SPREAD = 1.0  # task run times fall in (job_seconds - SPREAD, job_seconds]
API_KEY = "bench"
AUTH = {"Authorization": f"Bearer {API_KEY}"}

Delivery = tuple[str, float]  # (task id, monotonic time the client held the video)


class NotAvailable(Exception):
    """This variant cannot run here (e.g. the engine has no webhook settings yet)."""


class SpreadTasks(dict):
    """The simulator's task table, moving each new task's start back by up to SPREAD
    seconds: run times then vary as real ones do, and no client's poll period (the
    SDK's 1 s) locks onto a whole-second run time."""

    rng = random.Random(7)

    def __setitem__(self, task_id, task) -> None:
        task.created -= self.rng.uniform(0, SPREAD)
        super().__setitem__(task_id, task)


@dataclass
class Row:
    gets: list[float] = field(default_factory=list)  # result GETs per job
    latency: list[float] = field(default_factory=list)  # completion -> delivered, seconds
    note: str = ""  # why there are no figures


# --- kling-bot ------------------------------------------------------------------------

def _webhook_settings(sim: Simulator) -> dict[str, object]:
    if not has_webhooks():
        raise NotAvailable("n/a: WaveSpeedSettings has no webhook_url yet")
    return harness.webhook_settings(getattr(sim, "webhook_secret", ""))


async def bot_jobs(sim: Simulator, base: str, workdir: Path, jobs: int, photo: bytes, *,
                   warmup: int = 0, webhooks: bool = False) -> list[Delivery]:
    """Run ``warmup`` jobs to the end (history), then ``jobs`` measured ones, on one engine."""
    extra = _webhook_settings(sim) if webhooks else {}
    settings = bench_settings(base, workdir, max_concurrent=jobs + warmup, **extra)
    engine = await Engine.from_settings(settings)
    recorder = Recorder()
    engine.register("bench", recorder)
    await engine.start()

    async def one(n: int, delay: float) -> Delivery:
        await asyncio.sleep(delay)
        answer = await engine.accept(GenerationRequest(
            UserRef("bench", f"user{n}"), "effect", photo, Params(effect="hula")))
        if not hasattr(answer, "job"):
            raise RuntimeError(f"refused: {answer.text}")
        return await recorder.expect(answer.job.id)

    try:
        await asyncio.gather(*(one(-1 - n, 0) for n in range(warmup)))
        return list(await asyncio.gather(*(one(n, n * STAGGER) for n in range(jobs))))
    finally:
        await engine.close()


async def first_jobs(sim: Simulator, base: str, workdir: Path, jobs: int, photo: bytes) -> list[Delivery]:
    """One job on each of ``jobs`` new databases, all at once: none knows any run time."""
    batches = await asyncio.gather(*(bot_jobs(sim, base, workdir / f"first{n}", 1, photo) for n in range(jobs)))
    return [delivery for batch in batches for delivery in batch]


# --- the official SDK and a naive poller ---------------------------------------------------

def sdk_job(base: str, image_uri: str) -> Delivery:
    """One job as the SDK's README shows it, default settings; then fetch the output."""
    import requests
    import wavespeed

    client = wavespeed.Client(api_key=API_KEY, base_url=base)
    output = client.run(EFFECT_MODEL, {"image": image_uri, "effect_scene": "hula"})
    url = output["outputs"][0]
    response = requests.get(url, timeout=60)
    response.raise_for_status()
    done = time.monotonic()
    return Path(urlsplit(url).path).stem, done  # the simulator's outputs are /outputs/{task id}.mp4


async def sdk_jobs(base: str, jobs: int, image_uri: str, pool: ThreadPoolExecutor) -> list[Delivery]:
    try:
        import wavespeed  # noqa: F401
    except ImportError:
        raise NotAvailable("n/a: pip install wavespeed==2.0.5 (make bench does)") from None
    loop = asyncio.get_running_loop()

    async def one(n: int) -> Delivery:
        await asyncio.sleep(n * STAGGER)
        return await loop.run_in_executor(pool, sdk_job, base, image_uri)

    return list(await asyncio.gather(*(one(n) for n in range(jobs))))


async def poller_jobs(base: str, jobs: int, image_uri: str) -> list[Delivery]:
    """Submit, GET the result every second until it is completed, download the video."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def one(n: int) -> Delivery:
            await asyncio.sleep(n * STAGGER)
            body = {"image": image_uri, "effect_scene": "hula"}
            async with session.post(f"{base}/api/v3/{EFFECT_MODEL}", json=body, headers=AUTH) as resp:
                data = (await resp.json())["data"]
            while data["status"] not in ("completed", "failed"):
                await asyncio.sleep(1.0)
                async with session.get(data["urls"]["get"], headers=AUTH) as resp:
                    data = (await resp.json())["data"]
            if data["status"] != "completed":
                raise RuntimeError(f"task {data['id']} failed")
            async with session.get(data["outputs"][0]) as resp:
                await resp.read()
            return data["id"], time.monotonic()

        return list(await asyncio.gather(*(one(n) for n in range(jobs))))


# --- one job length ----------------------------------------------------------------------

async def one_length(seconds: float, jobs: int, history_jobs: int, photo: bytes,
                     pool: ThreadPoolExecutor, workdir: Path) -> dict[str, Row]:
    sim = Simulator(job_seconds=seconds, api_key=API_KEY)
    sim.tasks = SpreadTasks()
    base = await sim.start()
    image_uri = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
    runs: dict[str, Callable[[], Awaitable[list[Delivery]]]] = {
        FRESH: lambda: bot_jobs(sim, base, workdir / "fresh", jobs, photo),
        HISTORY: lambda: bot_jobs(sim, base, workdir / "history", jobs, photo, warmup=history_jobs),
        WEBHOOKS: lambda: bot_jobs(sim, base, workdir / "webhooks", jobs, photo, webhooks=True),
        SDK: lambda: sdk_jobs(base, jobs, image_uri, pool),
        POLLER: lambda: poller_jobs(base, jobs, image_uri),
    }
    return await measure(sim, runs)


async def measure(sim: Simulator, runs: dict[str, Callable[[], Awaitable[list[Delivery]]]]) -> dict[str, Row]:
    """Run every variant at once on ``sim``; per job: its result GETs, and from its task's
    end to the client holding the video. The simulator is closed after."""
    try:
        outcomes = await asyncio.gather(*(run() for run in runs.values()), return_exceptions=True)
    finally:
        await sim.close()
    rows: dict[str, Row] = {}
    for variant, outcome in zip(runs, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            note = str(outcome) if isinstance(outcome, NotAvailable) else f"error: {outcome!r}"[:60]
            rows[variant] = Row(note=note)
            continue
        row = rows[variant] = Row()
        for task_id, delivered in outcome:
            row.gets.append(sum(1 for r in sim.requests if r["method"] == "GET"
                                and r["path"].split("?")[0].endswith(f"/{task_id}/result")))
            row.latency.append(delivered - sim.tasks[task_id].ends_at(sim.job_seconds))
    return rows


async def spread_jobs(seconds: float, jobs: int, warm_jobs: int, photo: bytes, pool: ThreadPoolExecutor,
                      workdir: Path) -> dict[str, Row]:
    """Jobs whose run times spread +-RUN_SPREAD around ``seconds``: fresh, first, warm, webhooks, SDK."""
    sim = Simulator(job_seconds=seconds, api_key=API_KEY, run_spread=RUN_SPREAD * seconds, seed=15)
    base = await sim.start()
    image_uri = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
    return await measure(sim, {
        FRESH: lambda: bot_jobs(sim, base, workdir / "fresh", jobs, photo),
        FIRST: lambda: first_jobs(sim, base, workdir, jobs, photo),
        WARM: lambda: bot_jobs(sim, base, workdir / "warm", jobs, photo, warmup=warm_jobs),
        WEBHOOKS: lambda: bot_jobs(sim, base, workdir / "webhooks", jobs, photo, webhooks=True),
        SDK: lambda: sdk_jobs(base, jobs, image_uri, pool),
    })


async def lost_webhook_jobs(jobs: int, photo: bytes, workdir: Path) -> Row:
    """Fresh bot, webhooks configured, every one of them lost: how late is each job seen?"""
    sim = Simulator(job_seconds=LOST_WEBHOOK_SECONDS, api_key=API_KEY)
    sim.fail_next("webhook", kind="drop", times=jobs)
    base = await sim.start()
    rows = await measure(sim, {WEBHOOKS: lambda: bot_jobs(sim, base, workdir / "lost", jobs, photo, webhooks=True)})
    return rows[WEBHOOKS]


# --- the report ----------------------------------------------------------------------------

def _ratio(value: float, sdk: float) -> str:
    return f"{value / sdk:5.2f}" if sdk == sdk and sdk > 0 and value == value else "    -"


def report(results: dict[float, dict[str, Row]], jobs: int) -> None:
    print(f"\n{jobs} jobs per variant and length; latency = task completed -> client holds the video")
    header = f"{'':28}{'GETs/job':>9}{'x SDK':>7}{'p50 s':>9}{'x SDK':>7}{'p95 s':>9}{'x SDK':>7}"
    for seconds, rows in results.items():
        print(f"\n{seconds:g} s jobs" + header[len(f"{seconds:g} s jobs"):])
        sdk = rows[SDK]
        sdk_gets, sdk_p50, sdk_p95 = mean(sdk.gets), quantile(sdk.latency, 0.5), quantile(sdk.latency, 0.95)
        for variant in VARIANTS:
            row = rows[variant]
            if row.note:
                print(f"  {variant:26}{row.note}")
                continue
            gets, p50, p95 = mean(row.gets), quantile(row.latency, 0.5), quantile(row.latency, 0.95)
            print(f"  {variant:26}{gets:9.1f}{_ratio(gets, sdk_gets):>7}{p50:9.2f}{_ratio(p50, sdk_p50):>7}"
                  f"{p95:9.2f}{_ratio(p95, sdk_p95):>7}")
    middle = list(results)[min(1, len(results) - 1)]
    rows = results[middle]
    shown = "" if middle == 60 else f"; this run shows its {middle:g} s jobs"
    print(f"\nGoals (for 60 s jobs{shown}):")
    goals = [(FRESH, "GETs/job", mean(rows[FRESH].gets), "<=", 12),
             (WEBHOOKS, "GETs/job", mean(rows[WEBHOOKS].gets), "<=", 2),
             (FRESH, "p50 s", quantile(rows[FRESH].latency, 0.5), "<", 2.0),
             (HISTORY, "p50 s", quantile(rows[HISTORY].latency, 0.5), "<", 0.5),
             (WEBHOOKS, "p50 s", quantile(rows[WEBHOOKS].latency, 0.5), "<", 0.3)]
    for variant, what, value, op, goal in goals:
        met = "n/a" if value != value else ("met" if (value <= goal if op == "<=" else value < goal) else "NOT met")
        print(f"  {variant:28}{what:9}{value:8.2f}  goal {op} {goal:<5g} {met}")


def _row(label: str, row: Row, sdk: Row | None) -> str:
    if row.note:
        return f"  {label:26}{row.note}"
    gets, p50, p95 = mean(row.gets), quantile(row.latency, 0.5), quantile(row.latency, 0.95)
    if sdk is None or sdk.note:
        return f"  {label:26}{gets:9.1f}{'':>7}{p50:9.2f}{'':>7}{p95:9.2f}"
    sdk_gets, sdk_p50, sdk_p95 = mean(sdk.gets), quantile(sdk.latency, 0.5), quantile(sdk.latency, 0.95)
    return (f"  {label:26}{gets:9.1f}{_ratio(gets, sdk_gets):>7}{p50:9.2f}{_ratio(p50, sdk_p50):>7}"
            f"{p95:9.2f}{_ratio(p95, sdk_p95):>7}")


def report_spread(seconds: float, rows: dict[str, Row], jobs: int, warm_jobs: int) -> None:
    spread = RUN_SPREAD * seconds
    title = f"{seconds:g} +- {spread:.1f} s jobs"
    header = f"{'':28}{'GETs/job':>9}{'x SDK':>7}{'p50 s':>9}{'x SDK':>7}{'p95 s':>9}{'x SDK':>7}"
    print(f"\nSpread: {jobs} jobs per variant, run times uniform in {seconds:g} +- {spread:.1f} s; "
          f"warm = after {warm_jobs} finished jobs")
    print(title + header[len(title):])
    for variant in SPREAD_VARIANTS:
        print(_row(variant, rows[variant], rows[SDK]))
    sdk = rows[SDK]
    if sdk.note or seconds != 60:
        print("(the goals are for 60 s jobs)")
        return
    sdk_gets, sdk_p50 = mean(sdk.gets), quantile(sdk.latency, 0.5)
    print(f"Goals (polling: p50 <= the SDK's {sdk_p50:.2f} s with <= 1/5 of its {sdk_gets:.1f} GETs; "
          f"warm: <= 12 GETs at that p50):")
    for variant, most in ((FRESH, sdk_gets / 5), (FIRST, sdk_gets / 5), (WARM, 12.0)):
        row = rows[variant]
        if row.note:
            continue
        gets, p50 = mean(row.gets), quantile(row.latency, 0.5)
        met = "met" if gets <= most and p50 <= sdk_p50 else "NOT met"
        print(f"  {variant:28}GETs {gets:5.1f} (<= {most:4.1f})  p50 {p50:5.2f} s (<= {sdk_p50:.2f})  {met}")


def report_lost(row: Row, jobs: int) -> None:
    print(f"\nLost webhooks: {jobs} jobs of {LOST_WEBHOOK_SECONDS:g} s, fresh bot, webhooks on, "
          f"every webhook dropped")
    if row.note:
        print(f"  {row.note}")
        return
    p50, worst = quantile(row.latency, 0.5), max(row.latency)
    print(f"  task end -> delivered: p50 {p50:.1f} s, max {worst:.1f} s; result GETs/job "
          f"{mean(row.gets):.1f}; goal < 30 s: {'met' if worst < 30 else 'NOT met'}")


async def main(lengths: list[float], jobs: int, history_jobs: int, warm_jobs: int, spread_seconds: float,
               only: str | None) -> None:
    photo = sample_photo()
    harness.serve_prepared_video(zoom_clip(photo, seconds=2.0))
    started = time.monotonic()
    meter = StallMeter()  # everything shares this process's event loop: how healthy was it?
    meter.start()
    wanted = {only} if only else {"lengths", "spread", "lost-webhook"}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=jobs * (len(lengths) + 1)) as pool:
        work = Path(tmp)

        async def nothing() -> None:
            return None

        sweep, spread, lost = await asyncio.gather(
            asyncio.gather(*(one_length(s, jobs, history_jobs, photo, pool, work / f"{s:g}") for s in lengths))
            if "lengths" in wanted else nothing(),
            spread_jobs(spread_seconds, jobs, warm_jobs, photo, pool, work / "spread")
            if "spread" in wanted else nothing(),
            lost_webhook_jobs(jobs, photo, work / "lost") if "lost-webhook" in wanted else nothing())
    await meter.stop()
    if sweep is not None:
        report(dict(zip(lengths, sweep, strict=True)), jobs)
    if spread is not None:
        report_spread(spread_seconds, spread, jobs, warm_jobs)
    if lost is not None:
        report_lost(lost, jobs)
    print(f"\nwall time {time.monotonic() - started:.0f} s; longest event-loop stall in this process "
          f"{meter.worst * 1000:.0f} ms, {meter.worst_at:.0f} s in")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4, 8 and 12 s jobs instead of 20, 60 and 120 s")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per variant and length (default 6)")
    parser.add_argument("--history-jobs", type=int, default=1,
                        help="finished jobs before the 'history' variant's measured ones (default 1)")
    parser.add_argument("--lengths", help="job lengths in seconds, e.g. 20,62,120 (the goals read the second)")
    parser.add_argument("--warm-jobs", type=int, default=10,
                        help="finished jobs before the spread scenario's warm ones (default 10)")
    parser.add_argument("--only", choices=["lengths", "spread", "lost-webhook"], help="run one scenario")
    args = parser.parse_args()
    lengths = ([float(x) for x in args.lengths.split(",")] if args.lengths
               else [4.0, 8.0, 12.0] if args.quick else [20.0, 60.0, 120.0])
    asyncio.run(main(lengths, args.jobs, args.history_jobs, args.warm_jobs, 12.0 if args.quick else 60.0,
                     args.only))

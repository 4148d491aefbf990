"""The bot's own costs under load: CPU per job, throughput, 2,000 jobs in flight, credits.

    python bench/load.py [--quick] [--profile]
    python bench/load.py --phase cpu|throughput|inflight|credits [options]   # one figure

Each phase runs in its own process (so peak RSS is that phase's), with the WaveSpeed
simulator in yet another process (``harness.py serve``: its CPU and memory are not
the bot's). The real Engine runs with default settings except those named below.

  cpu         ``--jobs`` (20) effect jobs at once, zero generation time, a 12 MP phone
              JPEG (4000x3000, ~4 MB) in and a 5 MB MP4 out, max_concurrent = jobs.
              CPU ms/job = this process's user+system CPU (every thread: media checks
              run in worker threads) from the first accept to the last delivery, / jobs.
              --profile prints where the main thread's time goes (cProfile).
  throughput  ``--jobs`` (200) jobs, zero generation time, the demo photo and a small
              clip, max_concurrent 16, poll_interval 0.05 s (the default 15 s would make
              the poll schedule, not the engine, the limit): delivered jobs/s, accept ms.
  inflight    2,000 jobs from 2,000 users arrive at once (one burst of accept() calls)
              (``--arrival-rate``: so many per second instead) with a Telegram-sized photo
              (1280x960, ~160 KB); the simulator's jobs last
              an hour, so none ends. Reported once all are accepted and max_concurrent
              of them (``--max-concurrent``, default: as configured) are at WaveSpeed:
              peak RSS (ru_maxrss), the SQLite file with -wal and -shm, and the longest
              event-loop stall (a task sleeping 10 ms records how late it wakes) while
              they arrive and while they are submitted.
  credits     reserve+commit pairs through bot.credits.Credits on a fresh database,
              each as the engine does it: one transaction like accept's (job limit
              check, reserve, job row, ledger row), one like delivery's (job done,
              commit, media dropped). ``--synchronous NORMAL`` tries that PRAGMA (what-if).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness import (
    Recorder,
    StallMeter,
    bench_settings,
    cpu_seconds,
    peak_rss_mb,
    quantile,
    simulator_process,
    system_cpu_seconds,
)

from bot import catalog
from bot.catalog import Params
from bot.config import QuotaSettings
from bot.credits import Credits
from bot.devtools.clips import sample_photo
from bot.engine import Engine
from bot.jobs import GenerationRequest, JobState, UserRef
from bot.media import prepare_image
from bot.store import Store


def _request(n: int, photo: bytes) -> GenerationRequest:
    return GenerationRequest(UserRef("bench", f"user{n}"), "effect", photo, Params(effect="hula"))


async def _accept(engine: Engine, n: int, photo: bytes, delay: float = 0.0) -> tuple[int, float]:
    """Accept one job after ``delay`` seconds; (job id, seconds the accept took)."""
    if delay:
        await asyncio.sleep(delay)
    started = time.perf_counter()
    answer = await engine.accept(_request(n, photo))
    if not hasattr(answer, "job"):
        raise RuntimeError(f"refused: {answer.text}")
    return answer.job.id, time.perf_counter() - started


async def _run_jobs(base: str, workdir: Path, photo: bytes, jobs: int, **wavespeed: object) -> dict:
    """Accept ``jobs`` jobs at once and wait for every delivery: wall, CPU, accept times."""
    engine = Engine.from_settings(bench_settings(base, workdir, **wavespeed))
    recorder = Recorder()
    engine.register("bench", recorder)
    await engine.start()
    try:
        cpu, system, started = cpu_seconds(), system_cpu_seconds(), time.perf_counter()
        accepted = await asyncio.gather(*(_accept(engine, n, photo) for n in range(jobs)))
        await asyncio.gather(*(recorder.expect(job_id) for job_id, _ in accepted))
        wall, cpu, system = time.perf_counter() - started, cpu_seconds() - cpu, system_cpu_seconds() - system
    finally:
        await engine.close()
    return {"jobs": jobs, "wall": wall, "cpu": cpu, "system": system, "accept": [took for _, took in accepted]}


# --- phases ---------------------------------------------------------------------------------

async def phase_cpu(args: argparse.Namespace, workdir: Path) -> dict:
    photo = harness.phone_photo()
    # What one accept's media check costs on its own (it runs in a worker thread).
    check = cpu_seconds()
    prepare_image(photo, catalog.model_by_id(harness.EFFECT_MODEL).image, max_input_bytes=20 << 20)
    check = cpu_seconds() - check
    profile = cProfile.Profile() if args.profile else None
    with simulator_process(job_seconds=0, video_mb=5) as base:
        if profile:
            profile.enable()
        run = await _run_jobs(base, workdir, photo, args.jobs, max_concurrent=args.jobs)
        if profile:
            profile.disable()
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue(), file=sys.stderr)
    return {**run, "photo_mb": len(photo) / 2**20, "media_check_ms": check * 1000}


async def phase_throughput(args: argparse.Namespace, workdir: Path) -> dict:
    with simulator_process(job_seconds=0, video_mb=0.001) as base:  # its zoom clip, made once
        return await _run_jobs(base, workdir, sample_photo(), args.jobs, max_concurrent=16, poll_interval=0.05)


async def phase_inflight(args: argparse.Namespace, workdir: Path) -> dict:
    photo = harness.phone_photo(1280, 960, noise=3)
    with simulator_process(job_seconds=3600) as base:
        wavespeed = {"max_concurrent": args.max_concurrent} if args.max_concurrent else {}
        settings = bench_settings(base, workdir, **wavespeed)
        target = min(args.jobs, settings.wavespeed.max_concurrent)
        engine = Engine.from_settings(settings)
        engine.register("bench", Recorder())
        await engine.start()
        meter = StallMeter()
        try:
            meter.start()
            started = time.perf_counter()
            accepted = await asyncio.gather(*(_accept(engine, n, photo, n / args.arrival_rate if args.arrival_rate
                                                      else 0.0) for n in range(args.jobs)))
            arrival, arrival_stall = time.perf_counter() - started, await meter.stop()
            meter.start()
            deadline = time.perf_counter() + args.settle_timeout
            while _count(engine, JobState.PROCESSING) < target and time.perf_counter() < deadline:
                await asyncio.sleep(0.2)
            submitting, submit_stall = time.perf_counter() - started - arrival, await meter.stop()
            states = dict(engine.store.db.execute("select state, count(*) from jobs group by state").fetchall())
            rss = peak_rss_mb()
            db = Path(settings.storage.path)
            size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        finally:
            await engine.close()
    return {"jobs": args.jobs, "max_concurrent": settings.wavespeed.max_concurrent, "photo_kb": len(photo) / 1024,
            "states": states, "rss_mb": rss, "sqlite_mb": size / 2**20, "arrival_s": arrival,
            "arrival_stall_ms": arrival_stall * 1000, "submit_s": submitting, "submit_stall_ms": submit_stall * 1000,
            "accept_p50_ms": quantile([a for _, a in accepted], 0.5) * 1000,
            "accept_p95_ms": quantile([a for _, a in accepted], 0.95) * 1000}


def _count(engine: Engine, state: JobState) -> int:
    return int(engine.store.db.execute("select count(*) from jobs where state = ?", [state.value]).fetchone()[0])


async def phase_credits(args: argparse.Namespace, workdir: Path) -> dict:
    store = Store(workdir / "credits.sqlite")
    if args.synchronous:  # a what-if: the bot's Store keeps SQLite's default (FULL)
        store.db.execute(f"PRAGMA synchronous = {args.synchronous}")
    credits = Credits(store, QuotaSettings(daily_credits=1_000_000, max_jobs_per_user=1_000_000))
    users = [UserRef("bench", f"user{n}") for n in range(100)]
    started = time.perf_counter()
    for n in range(args.pairs):
        user = users[n % len(users)]
        now = time.time()
        with store.transaction():  # as Engine.accept
            store.count_active(user.key)
            daily, bonus, period = credits.reserve(user, 1)
            job_id = store.insert_job({
                "user_key": user.key, "platform": "bench", "reply_to": {}, "model_id": harness.EFFECT_MODEL,
                "kind": "effect", "inputs": {"effect_scene": "hula"}, "label": "hula", "cost": 1,
                "paid_daily": daily, "paid_bonus": bonus, "period": period, "state": "queued",
                "created_at": now, "updated_at": now})
            credits.record(user.key, "reserve", -daily, -bonus, job_id)
        with store.transaction():  # as Pipeline.settle_done
            job = store.update_job(job_id, state=JobState.DONE, finished_at=now, updated_at=now)
            credits.commit(job)
            store.drop_media(job_id)
    elapsed = time.perf_counter() - started
    store.close()
    return {"pairs": args.pairs, "seconds": elapsed, "synchronous": args.synchronous}


PHASES = {"cpu": phase_cpu, "throughput": phase_throughput, "inflight": phase_inflight, "credits": phase_credits}


# --- the whole run ----------------------------------------------------------------------------

def _phase(name: str, *options: str) -> dict:
    """Run one phase as its own process and read its JSON answer (its last stdout line)."""
    done = subprocess.run([sys.executable, __file__, "--phase", name, *options],
                          stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _line(what: str, value: str, goal: str = "", met: bool | None = None) -> None:
    verdict = "" if met is None else ("met" if met else "NOT met")
    print(f"  {what:58}{value:>12}   {goal:10}{verdict}")


def whole_run(quick: bool, profile: bool) -> None:
    started = time.monotonic()
    cpu = _phase("cpu", "--jobs", "8" if quick else "20", *(["--profile"] if profile else []))
    throughput = _phase("throughput", "--jobs", "50" if quick else "200")
    inflight = [_phase("inflight", "--jobs", "400" if quick else "2000", *extra)
                for extra in ([], ["--max-concurrent", "400" if quick else "2000"])]
    pairs = "1000" if quick else "5000"
    credits = [_phase("credits", "--pairs", pairs), _phase("credits", "--pairs", pairs, "--synchronous", "NORMAL")]

    print("\nkling-bot under load" + (" (--quick: smaller counts)" if quick else ""))
    ms = cpu["cpu"] / cpu["jobs"] * 1000
    print(f"CPU per job: {cpu['jobs']} jobs at once, {cpu['photo_mb']:.1f} MB 12 MP JPEG in, 5 MB MP4 out")
    _line("bot CPU per job (all threads)", f"{ms:.0f} ms", "< 50 ms", ms < 50)
    _line("  of which in the kernel (sockets, files, SQLite writes)", f"{cpu['system'] / cpu['jobs'] * 1000:.0f} ms")
    _line("  of which the photo check, measured alone", f"{cpu['media_check_ms']:.0f} ms")
    _line("  wall time for all of them", f"{cpu['wall']:.1f} s")
    rate = throughput["jobs"] / throughput["wall"]
    print(f"Throughput: {throughput['jobs']} jobs, zero generation time, demo photo, "
          "max_concurrent 16, poll_interval 0.05 s")
    _line("jobs delivered per second", f"{rate:.1f}")
    _line("  bot CPU per job (small media)", f"{throughput['cpu'] / throughput['jobs'] * 1000:.0f} ms")
    _line("  accept p50 / p95 (all arriving at once)",
          f"{quantile(throughput['accept'], 0.5) * 1000:.0f}/{quantile(throughput['accept'], 0.95) * 1000:.0f} ms")
    for run in inflight:
        print(f"{run['jobs']} jobs in flight, max_concurrent {run['max_concurrent']}, "
              f"{run['photo_kb']:.0f} KB photos; states {run['states']}")
        _line("peak RSS", f"{run['rss_mb']:.0f} MB", "< 200 MB", run["rss_mb"] < 200)
        _line("SQLite file (+ -wal, -shm)", f"{run['sqlite_mb']:.0f} MB", "< 50 MB", run["sqlite_mb"] < 50)
        _line(f"longest event-loop stall while they arrive ({run['arrival_s']:.1f} s)",
              f"{run['arrival_stall_ms']:.0f} ms", "< 100 ms", run["arrival_stall_ms"] < 100)
        _line(f"longest event-loop stall while they are submitted ({run['submit_s']:.1f} s)",
              f"{run['submit_stall_ms']:.0f} ms")
        _line("  accept p50 / p95", f"{run['accept_p50_ms']:.0f}/{run['accept_p95_ms']:.0f} ms")
    print(f"Credits: {credits[0]['pairs']} reserve+commit pairs, one after another, fresh database")
    rate = credits[0]["pairs"] / credits[0]["seconds"]
    _line("pairs per second", f"{rate:.0f}", ">= 3,000", rate >= 3000)
    rate = credits[1]["pairs"] / credits[1]["seconds"]
    _line("  what if: the same with PRAGMA synchronous = NORMAL", f"{rate:.0f}")
    print(f"\nwall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, to try it fast")
    parser.add_argument("--profile", action="store_true", help="cProfile the cpu phase (printed to stderr)")
    parser.add_argument("--phase", choices=PHASES, help="run one phase and print its figures as JSON")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--max-concurrent", type=int, default=0, help="inflight: 0 = as configured")
    parser.add_argument("--settle-timeout", type=float, default=180.0,
                        help="inflight: longest wait for max_concurrent jobs to reach WaveSpeed")
    parser.add_argument("--arrival-rate", type=float, default=0.0,
                        help="inflight: jobs arriving per second (0: all at once)")
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--synchronous", choices=["", "NORMAL", "FULL", "OFF"], default="",
                        help="credits: set PRAGMA synchronous on the bench's Store (default: as the bot has it)")
    args = parser.parse_args()
    if args.phase:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(asyncio.run(PHASES[args.phase](args, Path(tmp)))))
    else:
        whole_run(args.quick, args.profile)

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
  inflight    2,000 jobs from 2,000 users arrive at once, one burst of accept() calls
              (``--arrival-rate N``: N per second instead), each with a Telegram-sized
              photo (1280x960, ~190 KB); the simulator's jobs last an hour, so none ends.
              Measured once all are accepted and max_concurrent of them (default: as
              configured; ``--max-concurrent``) are at WaveSpeed: peak RSS (ru_maxrss),
              the SQLite file with -wal and -shm (and media files kept beside it), the
              longest event-loop stall (a task sleeping 10 ms records how late it wakes)
              while they arrive and while they are submitted; then CPU and stalls over
              ``--steady`` seconds of waiting. The whole run also tries max_concurrent
              2,000, with and without ``--webhooks``.
  credits     reserve+commit pairs through bot.credits.Credits on a fresh database,
              each as the engine does it: accept's own reservation (``Credits.reserve_job``:
              job limit check, reserve, job row, ledger row), then the engine's settle step
              (``Pipeline.settle_done``: job done, credits committed, media dropped).

``--phase X --synchronous FULL`` (or NORMAL, OFF) shows what that PRAGMA on the bot's
database would change.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
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
    has_webhooks,
    peak_rss_mb,
    quantile,
    simulator_process,
    system_cpu_seconds,
)

from bot import catalog
from bot.catalog import Params
from bot.devtools.clips import sample_photo
from bot.engine import Engine
from bot.jobs import GenerationRequest, JobState, UserRef
from bot.media import prepare_image
from bot.store.sqlite import SqliteStore as Store


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


def _what_if(store: Store, synchronous: str) -> Store:
    """``--synchronous``: try that PRAGMA on the bot's database instead of the bot's own choice."""
    if synchronous:
        store.db.execute(f"PRAGMA synchronous = {synchronous}")
    return store


async def _run_jobs(base: str, workdir: Path, photo: bytes, jobs: int, synchronous: str,
                    **wavespeed: object) -> dict:
    """Accept ``jobs`` jobs at once and wait for every delivery: wall, CPU, accept times."""
    engine = await Engine.from_settings(bench_settings(base, workdir, **wavespeed))
    _what_if(engine.store, synchronous)
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
        run = await _run_jobs(base, workdir, photo, args.jobs, args.synchronous, max_concurrent=args.jobs)
        if profile:
            profile.disable()
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue(), file=sys.stderr)
    return {**run, "photo_mb": len(photo) / 2**20, "media_check_ms": check * 1000}


async def phase_throughput(args: argparse.Namespace, workdir: Path) -> dict:
    with simulator_process(job_seconds=0, video_mb=0.001) as base:  # its zoom clip, made once
        return await _run_jobs(base, workdir, sample_photo(), args.jobs, args.synchronous,
                               max_concurrent=16, poll_interval=0.05)


async def phase_inflight(args: argparse.Namespace, workdir: Path) -> dict:
    photo = harness.phone_photo(1280, 960, noise=3)
    with simulator_process(job_seconds=3600) as base:
        wavespeed: dict[str, object] = {"max_concurrent": args.max_concurrent} if args.max_concurrent else {}
        if args.webhooks:
            wavespeed.update(harness.webhook_settings())  # the engine fetches the secret from the simulator
        settings = bench_settings(base, workdir, **wavespeed)
        target = min(args.jobs, settings.wavespeed.max_concurrent)
        engine = await Engine.from_settings(settings)
        _what_if(engine.store, args.synchronous)
        engine.register("bench", Recorder())
        await engine.start()
        meter = StallMeter()
        rss_before = peak_rss_mb()
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
            # Steady state: everything accepted and submitted, nothing ends; what does waiting cost?
            meter.start()
            cpu = cpu_seconds()
            await asyncio.sleep(args.steady)
            steady_cpu, steady_stall = (cpu_seconds() - cpu) / args.steady, await meter.stop()
            states = dict(engine.store.db.execute("select state, count(*) from jobs group by state").fetchall())
            rss = peak_rss_mb()
            size, beside = _sizes(Path(settings.storage.path))
            blobs = engine.store.db.execute("select coalesce(sum(length(data)), 0) from job_media").fetchone()[0]
        finally:
            await engine.close()
    return {"jobs": args.jobs, "max_concurrent": settings.wavespeed.max_concurrent, "photo_kb": len(photo) / 1024,
            "webhooks": args.webhooks, "states": states, "rss_mb": rss, "rss_before_mb": rss_before,
            "sqlite_mb": size / 2**20, "blobs_mb": blobs / 2**20,
            "beside_mb": beside / 2**20, "arrival_s": arrival,
            "arrival_stall_ms": arrival_stall * 1000, "submit_s": submitting, "submit_stall_ms": submit_stall * 1000,
            "steady_s": args.steady, "steady_cpu": steady_cpu, "steady_stall_ms": steady_stall * 1000,
            "accept_p50_ms": quantile([a for _, a in accepted], 0.5) * 1000,
            "accept_p95_ms": quantile([a for _, a in accepted], 0.95) * 1000}


def _count(engine: Engine, state: JobState) -> int:
    return int(engine.store.db.execute("select count(*) from jobs where state = ?", [state.value]).fetchone()[0])


async def phase_credits(args: argparse.Namespace, workdir: Path) -> dict:
    # An engine that is never started: its store, credit policy and settle step are the real ones.
    engine = await Engine.from_settings(bench_settings("http://127.0.0.1:9", workdir))
    store, credits = _what_if(engine.store, args.synchronous), engine.credits
    users = [UserRef("bench", f"user{n}") for n in range(100)]
    started = time.perf_counter()
    for n in range(args.pairs):
        user = users[n % len(users)]
        now = time.time()
        reserved, _ = await credits.reserve_job(user, 1, {  # Engine.accept's reservation, without the photo
            "platform": "bench", "reply_to": {}, "model_id": harness.EFFECT_MODEL, "kind": "effect",
            "inputs": {"effect_scene": "hula"}, "label": "hula", "state": "queued",
            "created_at": now, "updated_at": now, "owner": engine.owner})
        await engine.pipeline.settle_done(reserved.job)  # done, commit, media dropped: one transaction
    elapsed = time.perf_counter() - started
    synchronous = store.db.execute("PRAGMA synchronous").fetchone()[0]
    await engine.close()
    return {"pairs": args.pairs, "seconds": elapsed,
            "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(synchronous, str(synchronous))}


def _sizes(db: Path) -> tuple[int, int]:
    """Bytes in the SQLite file with its -wal and -shm; bytes in files kept beside it (media)."""
    sqlite = sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())
    beside = sum(f.stat().st_size for d in db.parent.glob(db.name + "*") if d.is_dir()
                 for f in d.rglob("*") if f.is_file())
    return sqlite, beside


PHASES = {"cpu": phase_cpu, "throughput": phase_throughput, "inflight": phase_inflight, "credits": phase_credits}


# --- the whole run ----------------------------------------------------------------------------

def _phase(name: str, *options: str) -> dict:
    """Run one phase as its own process and read its JSON answer (its last stdout line)."""
    os.sync()  # the disk's write-back of the previous phase is not this phase's cost
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
    many = "400" if quick else "2000"
    setups = [[], ["--max-concurrent", many]] + ([["--max-concurrent", many, "--webhooks"]] if has_webhooks() else [])
    inflight = [_phase("inflight", "--jobs", many, "--steady", "5" if quick else "15", *extra) for extra in setups]
    credits = _phase("credits", "--pairs", "1000" if quick else "5000")

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
              f"{'webhooks' if run['webhooks'] else 'polling'}, {run['photo_kb']:.0f} KB photos; {run['states']}")
        _line("peak RSS", f"{run['rss_mb']:.0f} MB", "< 200 MB", run["rss_mb"] < 200)
        _line("  peak RSS before the first job (imports, engine)", f"{run['rss_before_mb']:.0f} MB")
        _line("SQLite file (+ -wal, -shm)", f"{run['sqlite_mb']:.0f} MB", "< 50 MB", run["sqlite_mb"] < 50)
        _line("  of which photos kept in the database", f"{run['blobs_mb']:.0f} MB")
        _line("photos kept in files beside it", f"{run['beside_mb']:.0f} MB")
        _line(f"longest event-loop stall while they arrive ({run['arrival_s']:.1f} s)",
              f"{run['arrival_stall_ms']:.0f} ms", "< 100 ms", run["arrival_stall_ms"] < 100)
        _line(f"longest event-loop stall while they are submitted ({run['submit_s']:.1f} s)",
              f"{run['submit_stall_ms']:.0f} ms")
        _line("  accept p50 / p95", f"{run['accept_p50_ms']:.0f}/{run['accept_p95_ms']:.0f} ms")
        _line(f"then waiting ({run['steady_s']:g} s): CPU, share of one core", f"{run['steady_cpu'] * 100:.0f} %")
        _line("  longest event-loop stall while waiting", f"{run['steady_stall_ms']:.0f} ms")
    print(f"Credits: {credits['pairs']} reserve+commit pairs, one after another, fresh database "
          f"(PRAGMA synchronous = {credits['synchronous']})")
    rate = credits["pairs"] / credits["seconds"]
    _line("pairs per second", f"{rate:.0f}", ">= 3,000", rate >= 3000)
    print(f"\nwall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, to try it fast")
    parser.add_argument("--profile", action="store_true", help="cProfile the cpu phase (printed to stderr)")
    parser.add_argument("--phase", choices=PHASES, help="run one phase and print its figures as JSON")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--max-concurrent", type=int, default=0, help="inflight: 0 = as configured")
    parser.add_argument("--webhooks", action="store_true", help="inflight: with [wavespeed] webhook_url set")
    parser.add_argument("--steady", type=float, default=15.0,
                        help="inflight: seconds of waiting measured once all are at WaveSpeed")
    parser.add_argument("--settle-timeout", type=float, default=180.0,
                        help="inflight: longest wait for max_concurrent jobs to reach WaveSpeed")
    parser.add_argument("--arrival-rate", type=float, default=0.0,
                        help="inflight: jobs arriving per second (0: all at once)")
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--synchronous", choices=["", "NORMAL", "FULL", "OFF"], default="",
                        help="what if the bot's database had this PRAGMA synchronous (default: as the bot sets it)")
    args = parser.parse_args()
    if args.phase:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(asyncio.run(PHASES[args.phase](args, Path(tmp)))))
    else:
        whole_run(args.quick, args.profile)

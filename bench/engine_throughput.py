"""Engine overhead per job, as a whole process against the local simulator.

    python bench/engine_throughput.py [--jobs 40] [--concurrent 8]

Reports per-job figures: accept latency (media check + atomic reservation) and the
engine's own time per job beyond what the simulated model run takes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.catalog import Params
from bot.config import QuotaSettings, load_settings
from bot.devtools.clips import sample_photo
from bot.devtools.simulator import Simulator
from bot.engine import Engine
from bot.jobs import GenerationRequest, UserRef


class Done:
    def __init__(self) -> None:
        self.finished: dict[int, float] = {}

    async def progress(self, job, update) -> None:
        pass

    async def deliver(self, job, video) -> None:
        self.finished[job.id] = time.perf_counter()

    async def fail(self, job, reason) -> None:
        print("failed:", reason, file=sys.stderr)
        self.finished[job.id] = time.perf_counter()

    async def cancelled(self, job, text) -> None:
        self.finished[job.id] = time.perf_counter()


async def main(jobs: int, concurrent: int, job_seconds: float) -> None:
    sim = Simulator(job_seconds=job_seconds, video_seconds=1.0)
    base = await sim.start()
    photo = sample_photo()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, env={}).with_wavespeed(
            base_url=base, api_key="bench", poll_interval=0.05, max_concurrent=concurrent)
        settings = replace(settings, storage=replace(settings.storage, path=f"{tmp}/b.sqlite",
                                                     videos_dir=f"{tmp}/v"),
                           quota=QuotaSettings(daily_credits=1000, max_jobs_per_user=1000))
        engine = await Engine.from_settings(settings)
        done = Done()
        engine.register("bench", done)
        await engine.start()
        accept_ms = []
        started = time.perf_counter()
        ids = []
        for n in range(jobs):
            t = time.perf_counter()
            answer = await engine.accept(GenerationRequest(
                UserRef("bench", str(n % 10)), "effect", photo, Params(effect="hula")))
            accept_ms.append((time.perf_counter() - t) * 1000)
            ids.append(answer.job.id)
        while len(done.finished) < jobs:
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - started
        await engine.close()
    await sim.close()
    ideal = jobs / concurrent * job_seconds
    print(f"jobs={jobs} concurrent={concurrent} simulated run={job_seconds:g}s each")
    print(f"accept: median {statistics.median(accept_ms):.1f} ms/job, "
          f"p95 {sorted(accept_ms)[int(jobs * 0.95) - 1]:.1f} ms/job")
    print(f"wall {wall:.2f}s vs {ideal:.2f}s of pure model time: "
          f"engine overhead {(wall - ideal) / jobs * 1000:.0f} ms/job, ratio {wall / ideal:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.jobs, args.concurrent, args.job_seconds))

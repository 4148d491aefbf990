"""The console chat (the demo) as a user sees it: commands answered while jobs run, one line
per cancel, and a progress bar that moves with the job. Through the real ConsoleChat, engine
and simulator; the demo itself as a process, behind a pipe and behind a terminal (a pty)."""

from __future__ import annotations

import asyncio
import io
import os
import queue
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adapters.console import PLATFORM, ConsoleChat, ConsoleCourier
from bot.jobs import UserRef
from tests.helpers import image_bytes

ROOT = Path(__file__).resolve().parent.parent
ME = UserRef(PLATFORM, "me", "me")
SLOW_JOB = 3.0  # seconds a simulated job takes: long enough to type commands meanwhile


@pytest.fixture
async def console(make_engine, simulator, tmp_path):
    """A console chat on an engine with one WaveSpeed slot, whose jobs take SLOW_JOB."""
    simulator.job_seconds = SLOW_JOB
    engine = await make_engine(start=False, max_concurrent=1, expected_run_seconds=SLOW_JOB)
    out = io.StringIO()
    courier = ConsoleCourier(out, tmp_path / "videos")
    engine.register(PLATFORM, courier)
    await engine.start()
    return ConsoleChat(engine, courier, ME, image_bytes(), out=out), out


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


async def test_jobs_answers_at_once_while_a_job_runs(console):
    chat, out = console
    started = time.monotonic()
    await chat.handle("/effect hula")
    await chat.handle("/jobs")
    answered = time.monotonic() - started
    seen = _lines(out)
    assert seen[0].startswith("Job 1 queued (effect hula)")
    assert any(line.startswith("Job 1 (effect hula): ") for line in seen)
    assert not any("done" in line for line in seen), "/jobs waited for the video"
    assert answered < SLOW_JOB
    await asyncio.wait_for(chat.finish(), 60)
    assert "[job 1] done: " in _lines(out)[-1]


async def test_cancel_of_a_queued_job_is_one_line_and_refunds(console):
    chat, out = console
    await chat.handle("/effect hula")  # takes the only slot
    before = (await chat.engine.balance(ME)).total
    await chat.handle("/effect jelly_press")
    assert (await chat.engine.balance(ME)).total == before - 1
    await chat.handle("/jobs")
    assert any(line.startswith("Job 2 (effect jelly press): queued") for line in _lines(out))
    shown = len(_lines(out))
    await chat.handle("/cancel 2")
    await chat.handle("/quota")
    await asyncio.wait_for(chat.finish(), 60)
    about_job_2 = [line for line in _lines(out)[shown:] if re.search(r"\b[Jj]ob 2\b", line)]
    assert about_job_2 == ["Job 2 cancelled; 1 credit refunded."]
    assert (await chat.engine.balance(ME)).total == before
    assert f"You have {before} credits." in " ".join(_lines(out))
    assert "[job 1] done: " in _lines(out)[-1]


async def test_quit_waits_for_the_running_job(console):
    chat, out = console
    await chat.handle("/effect hula")
    assert await chat.handle("/quit") is False
    await asyncio.wait_for(chat.finish(), 60)
    waiting = _lines(out).index("Waiting for job 1 to finish; Ctrl+C quits without it.")
    assert not any("done" in line for line in _lines(out)[:waiting])
    assert "[job 1] done: " in _lines(out)[-1]


# --- the demo as a process --------------------------------------------------------------

def _demo(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "WAVESPEED_API_KEY"}
    env.update(PYTHONPATH=str(ROOT), TERM="xterm", COLUMNS="120")
    return subprocess.Popen([sys.executable, "-m", "adapters", "demo", *args], cwd=cwd, env=env, **popen)


class _Lines:
    """A process's output lines, collected in a thread, waited for with a timeout."""

    def __init__(self, stream):
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if predicate(line):
                return line
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"not seen in time; output so far: {self.seen}")


def test_demo_takes_commands_while_a_job_runs_and_ends_after_it(tmp_path):
    demo = _demo("--job-seconds", "4", cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True)
    try:
        out = _Lines(demo.stdout)
        demo.stdin.write("/effect hula\n")
        demo.stdin.flush()
        out.wait_for(lambda line: line.startswith("Job 1 queued (effect hula)"))
        demo.stdin.write("/jobs\n")
        demo.stdin.flush()
        out.wait_for(lambda line: line.startswith("Job 1 (effect hula): "))
        assert not any("done" in line for line in out.seen), "/jobs waited for the video"
        demo.stdin.write("/quota\n")
        demo.stdin.close()  # the end of input: the demo waits for job 1, then ends
        out.wait_for(lambda line: line == "Waiting for job 1 to finish; Ctrl+C quits without it.")
        out.wait_for(lambda line: line.startswith("[job 1] done: kling-demo/job-1-effect-hula.mp4"))
        assert demo.wait(60) == 0, demo.stderr.read()
    finally:
        demo.kill()
        demo.wait()
    assert (tmp_path / "kling-demo" / "job-1-effect-hula.mp4").stat().st_size > 1000


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_demo_in_a_terminal_draws_a_moving_bar_and_keeps_the_typed_line(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    demo = _demo("--job-seconds", "3", cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                 start_new_session=True)
    os.close(slave)
    screen = bytearray()

    def read_until(pattern: bytes, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, screen):
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern!r} not seen; got {bytes(screen)!r}"
            if select.select([master], [], [], min(left, 0.2))[0]:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:  # the demo has ended
                    assert re.search(pattern, screen), f"{pattern!r} not seen; got {bytes(screen)!r}"

    try:
        read_until(rb"> ")
        os.write(master, b"/effect hula\r")
        read_until(rb"(?s)Job 1 queued \(effect hula\).*> ")  # answered, and the prompt is back
        os.write(master, b"/quo")  # typed, not yet entered, while the bar moves
        read_until(rb"\[job 1\] done: ")
        os.write(master, b"ta\r")
        read_until(rb"(?s)You have 9 credits\..*> ")
        os.write(master, b"\x04")  # Ctrl+D at the prompt: the end of input
        assert demo.wait(60) == 0
        with_bytes = bytes(screen)
    finally:
        demo.kill()
        demo.wait()
        os.close(master)
    text = with_bytes.decode("utf-8", "replace")
    percents = [int(p) for p in re.findall(r"Generating… (\d+)%", text)]
    assert any(10 <= p <= 90 for p in percents), f"the bar never moved: {percents}"
    assert percents == sorted(percents)
    try:
        import readline  # noqa: F401  (what the demo reads the typed text back from)
    except ImportError:
        return
    # Each redraw of the bar draws the half-typed command again below it.
    assert len(re.findall(r"left\.\r?\n> /quo(?!ta)", text)) >= 2

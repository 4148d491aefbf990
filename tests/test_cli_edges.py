"""The command line at its edges, run as a user runs it: whole processes, killed, piped
into ``head``, pointed at wrong paths and servers. Each run is bounded by a timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import API_KEY
from tests.helpers import image_bytes, mp4_info

ROOT = Path(__file__).resolve().parent.parent
TG_TOKEN = "123456:AAEdgeCaseTokenDoNotLeak_xyz"
RUN_TIMEOUT = 90  # seconds any one process of these tests may take


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_API_KEY"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _config(tmp_path: Path, base_url: str, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[wavespeed]
base_url = "{base_url}"
api_key = "{API_KEY}"
poll_interval = 0.2
history_settle = 0.5
{extra}
[storage]
path = "{tmp_path / 'real.sqlite'}"
videos_dir = "{tmp_path / 'videos'}"
lease_seconds = 2
""")
    return path


def kling(*args: str, cwd: Path, stdin: str = "", env: dict | None = None,
          timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=_env(**(env or {})))


async def akling(*args: str, cwd: Path, timeout: float = RUN_TIMEOUT,
                 env: dict | None = None) -> tuple[int, str, str]:
    """The same, without blocking the test's event loop (which runs the simulator)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", *args, cwd=cwd, env=_env(**(env or {})),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, out.decode(), err.decode()


async def _until(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)
    return found


def _db(tmp_path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(tmp_path / "real.sqlite") as conn:
        return conn.execute(sql, args).fetchall()


def _credits_left(tmp_path: Path) -> int:
    [(daily, bonus)] = _db(tmp_path, "select daily_left, bonus from users")
    return daily + bonus


def _one_plain_line(stderr: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("kling-bot: "), stderr
    assert "Traceback" not in stderr


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "cat.jpg"
    path.write_bytes(image_bytes())
    return path


# --- 6. a generate that is stopped settles its job ---------------------------------------

async def _generate_until(tmp_path: Path, ready, *extra: str, env: dict | None = None) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "generate", "cat.jpg", "--effect", "hula",
        "--config", "config.toml", *extra, cwd=tmp_path, env=_env(**(env or {})),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await _until(ready)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process


async def _ended(process: asyncio.subprocess.Process, timeout: float = 15.0) -> tuple[str, str]:
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out.decode(), err.decode()


def _uploading(simulator) -> bool:
    return any("/media/upload" in r["path"] for r in simulator.requests)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_generate_stopped_before_submit_cancels_its_job_and_refunds(tmp_path, photo, simulator, signum):
    _config(tmp_path, simulator.base_url)
    simulator.fail_next("upload", status=0, delay=20)  # the photo is on its way when the signal comes
    process = await _generate_until(tmp_path, lambda: _uploading(simulator))
    process.send_signal(signum)
    _, stderr = await _ended(process)
    assert process.returncode != 0
    assert "Traceback" not in stderr
    assert "Job 1 cancelled; 1 credit refunded." in stderr
    assert simulator.submissions == []
    assert _db(tmp_path, "select state, settlement from jobs") == [("cancelled", "refunded")]
    assert _credits_left(tmp_path) == 10
    code, listing, _ = await akling("jobs", "--config", "config.toml", cwd=tmp_path)
    assert code == 0 and "Job 1 (effect hula): cancelled" in listing


async def test_generate_stopped_after_submit_is_finished_by_the_next_generate(tmp_path, photo, simulator):
    _config(tmp_path, simulator.base_url)
    simulator.job_seconds = 4.0
    process = await _generate_until(tmp_path, lambda: simulator.submissions, "-o", "first.mp4")
    process.send_signal(signal.SIGTERM)
    _, stderr = await _ended(process)
    assert process.returncode != 0 and "Traceback" not in stderr
    assert "Job 1 is already at WaveSpeed" in stderr
    code, listing, _ = await akling("jobs", "--config", "config.toml", cwd=tmp_path)
    assert code == 0 and "Job 1 (effect hula): " in listing and "cancelled" not in listing
    simulator.job_seconds = 0.3
    code, stdout, stderr = await akling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml",
                                        "-o", "second.mp4", cwd=tmp_path)
    assert code == 0, stderr
    assert stdout.strip() == "second.mp4"
    assert "[job 1] done: first.mp4" in stderr  # the user is told where job 1's video went
    for name in ("first.mp4", "second.mp4"):
        assert mp4_info((tmp_path / name).read_bytes())[0] == "h264"
    assert len(simulator.submissions) == 2  # job 1 followed, never submitted twice
    assert _db(tmp_path, "select state, settlement from jobs order by id") == [("done", "committed")] * 2
    assert _credits_left(tmp_path) == 8


async def test_kling_bot_run_finishes_a_job_a_stopped_generate_left(tmp_path, photo, simulator):
    from tests.fake_telegram import FakeTelegram
    _config(tmp_path, simulator.base_url)
    simulator.job_seconds = 4.0
    process = await _generate_until(tmp_path, lambda: simulator.submissions, "-o", "left.mp4")
    process.send_signal(signal.SIGINT)
    await _ended(process)
    telegram = FakeTelegram(TG_TOKEN)
    await telegram.start()
    with (tmp_path / "config.toml").open("a") as config:
        config.write(f'[telegram]\nbase_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n')
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", "--config", "config.toml", cwd=tmp_path,
        env=_env(TELEGRAM_BOT_TOKEN=TG_TOKEN), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await _until(lambda: _db(tmp_path, "select state from jobs") == [("done",)], timeout=40)
    finally:
        bot.terminate()
        await _ended(bot)
        await telegram.close()
    assert mp4_info((tmp_path / "left.mp4").read_bytes())[0] == "h264"
    assert len(simulator.submissions) == 1 and _credits_left(tmp_path) == 9


async def test_generate_piped_into_head_ends_promptly_and_settles(tmp_path, photo, simulator):
    _config(tmp_path, simulator.base_url)
    simulator.fail_next("upload", status=0, delay=30)
    process = await asyncio.create_subprocess_shell(
        f"{sys.executable} -m adapters generate cat.jpg --effect hula --config config.toml 2>&1 | head -1",
        cwd=tmp_path, env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    started = time.monotonic()
    stdout, _ = await _ended(process, timeout=40)
    assert stdout.startswith("[job 1] ")
    await _until(lambda: _db(tmp_path, "select state from jobs") == [("cancelled",)], timeout=10)
    assert time.monotonic() - started < 25
    assert _credits_left(tmp_path) == 10


# --- 7. simulated runs never touch real credits ------------------------------------------

async def test_simulated_generate_leaves_the_real_credits_alone(tmp_path, photo, simulator):
    _config(tmp_path, simulator.base_url)
    code, _, stderr = await akling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml",
                                   "-o", "real.mp4", cwd=tmp_path)
    assert code == 0, stderr
    assert _credits_left(tmp_path) == 9
    code, _, stderr = await akling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml",
                                   "--simulate", "-o", "sim.mp4", cwd=tmp_path)
    assert code == 0, stderr
    assert _credits_left(tmp_path) == 9
    assert len(_db(tmp_path, "select id from jobs")) == 1


# --- 8. the output path is checked before anything is paid --------------------------------

@pytest.mark.parametrize("output", ["clips", "new/"], ids=["an existing folder", "a path ending in /"])
async def test_output_folder_gets_a_fresh_file_inside_it(tmp_path, photo, simulator, output):
    _config(tmp_path, simulator.base_url)
    (tmp_path / "clips").mkdir()
    code, stdout, stderr = await akling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml",
                                        "-o", output, cwd=tmp_path)
    assert code == 0, stderr
    saved = Path(stdout.strip())
    assert saved.parent == Path(output.rstrip("/")) and saved.suffix == ".mp4"
    assert mp4_info((tmp_path / saved).read_bytes())[0] == "h264"


@pytest.mark.parametrize("output", ["cat.jpg/out.mp4", "/proc/kling-out.mp4"])
async def test_unwritable_output_is_refused_before_any_credit_or_submit(tmp_path, photo, simulator, output):
    _config(tmp_path, simulator.base_url)
    code, _, stderr = await akling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml",
                                   "-o", output, cwd=tmp_path)
    assert code == 2
    _one_plain_line(stderr)
    assert output in stderr
    assert simulator.submissions == [] and not _uploading(simulator)
    assert not (tmp_path / "real.sqlite").exists() or not _db(tmp_path, "select id from jobs")


async def test_video_that_cannot_be_written_where_asked_is_saved_elsewhere(tmp_path, photo, simulator):
    _config(tmp_path, simulator.base_url)
    (tmp_path / "sub").mkdir()
    simulator.job_seconds = 3.0
    process = await _generate_until(tmp_path, lambda: simulator.submissions, "-o", "sub/out.mp4")
    (tmp_path / "sub").rmdir()
    (tmp_path / "sub").write_text("now a file: nothing can be written inside it")
    stdout, stderr = await _ended(process, timeout=60)
    assert process.returncode == 0, stderr
    saved = Path(stdout.strip())
    assert mp4_info((tmp_path / saved).read_bytes())[0] == "h264"
    assert "sub/out.mp4" in stderr and str(saved) in stderr
    assert _db(tmp_path, "select state from jobs") == [("done",)]


# --- 14. tracebacks are masked too ---------------------------------------------------------

def test_a_logged_traceback_masks_the_configured_secrets(tmp_path):
    (tmp_path / "config.toml").write_text(f'[telegram]\ntoken = "{TG_TOKEN}"\n')
    script = (
        "import logging\n"
        "from adapters import app\n"
        "app.configure_logging(False)\n"
        "app.settings_from(None)\n"
        "def fetch():\n"
        f"    raise ConnectionError('GET https://api.telegram.org/file/bot{TG_TOKEN}/photos/1.jpg failed')\n"
        "try:\n"
        "    fetch()\n"
        "except ConnectionError:\n"
        "    logging.getLogger('telegram.ext').exception('download failed')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, env=_env())
    assert "Traceback" in done.stderr and "ConnectionError" in done.stderr
    assert TG_TOKEN not in done.stderr
    assert "/file/bot[secret]/photos" in done.stderr


# --- 15. command-line rough edges: one plain line each --------------------------------------

@pytest.mark.parametrize("kind", ["folder", "not utf-8"])
def test_config_that_is_not_a_readable_toml_file_is_one_line(tmp_path, photo, kind):
    config = tmp_path / "settings"
    if kind == "folder":
        config.mkdir()
    else:
        config.write_bytes(b'[quota]\n# caf\xe9\ndaily_credits = 5\n')
    done = kling("generate", "cat.jpg", "--effect", "hula", "--simulate", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    _one_plain_line(done.stderr)
    assert str(config) in done.stderr


@pytest.fixture
def busy_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("args", [["--port", "BUSY"], ["--port", "70000"], ["--port", "-1"],
                                  ["--host", "0.0.0.0"], ["--host", "192.0.2.7"]])
def test_simulator_refuses_a_bad_port_or_a_public_host_in_one_line(tmp_path, busy_port, args):
    args = [str(busy_port) if a == "BUSY" else a for a in args]
    done = kling("simulator", *args, cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    _one_plain_line(done.stderr)


@pytest.fixture
async def not_a_bot_api():
    """An HTTP server that answers every request with an HTML 404 page."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html><body>Not Found</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_run_with_a_telegram_base_url_that_is_no_bot_api_is_one_line(tmp_path, not_a_bot_api):
    (tmp_path / "config.toml").write_text(
        f'[telegram]\nbase_url = "{not_a_bot_api}/bot"\nbase_file_url = "{not_a_bot_api}/file/bot"\n'
        f'[storage]\npath = "bot.sqlite"\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", "run", "--simulate", cwd=tmp_path, env=_env(TELEGRAM_BOT_TOKEN=TG_TOKEN),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, stderr = await _ended(process, timeout=60)
    assert process.returncode == 2
    _one_plain_line(stderr)
    assert "base_url" in stderr and TG_TOKEN not in stderr


def test_demo_survives_a_word_too_long_for_a_file_name_and_keeps_job_1s_video(tmp_path):
    long_word = "x" * 300
    done = kling("demo", "--job-seconds", "0.5", cwd=tmp_path,
                 stdin=f"/effect hula\n/animate {long_word} dances\n/animate {long_word}\n/quit\n")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    videos = sorted((tmp_path / "kling-demo").glob("*.mp4"))
    assert videos and all(len(v.name) < 100 for v in videos)
    assert any(v.name.startswith("job-1-") for v in videos)


def test_the_demo_writing_into_a_closed_pipe_ends_quietly(tmp_path):
    """(``generate`` into a closed pipe: test_generate_piped_into_head_ends_promptly_and_settles.)"""
    started = time.monotonic()
    subprocess.run(f"{sys.executable} -m adapters demo --job-seconds 5 2>err.txt | head -c 1 >/dev/null",
                          shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          env=_env())
    assert time.monotonic() - started < 30
    errors = (tmp_path / "err.txt").read_text()
    assert "Traceback" not in errors and "Exception ignored" not in errors and "Logging error" not in errors


def test_generate_without_network_ends_soon_with_one_line(tmp_path, photo):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    _config(tmp_path, f"http://127.0.0.1:{closed}", "request_timeout = 1\n")
    started = time.monotonic()
    done = kling("generate", "cat.jpg", "--effect", "hula", "--config", "config.toml", cwd=tmp_path, timeout=60)
    assert time.monotonic() - started < 20
    assert done.returncode != 0
    _one_plain_line(done.stderr)
    assert not (tmp_path / "real.sqlite").exists() or _credits_left(tmp_path) == 10


def test_generate_and_the_demo_never_overwrite_an_earlier_video(tmp_path, photo):
    runs = [kling("generate", "cat.jpg", "--effect", "hula", "--simulate", "-o", "out.mp4", cwd=tmp_path)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["out.mp4", "out-1.mp4"], [r.stderr for r in runs]
    for _ in range(2):
        done = kling("demo", "--job-seconds", "0.3", cwd=tmp_path, stdin="/effect hula\n/quit\n")
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "kling-demo").glob("*.mp4")) == [
        "job-1-effect-hula-1.mp4", "job-1-effect-hula.mp4"]

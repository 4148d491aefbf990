"""The composition root: settings -> store -> engine -> adapters, signals and log redaction.

Each ``run_*`` coroutine is one command of ``kling-bot`` and returns its exit code;
``adapters/cli.py`` parses the arguments and calls them through ``main``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import select
import signal
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

import aiohttp

from adapters.chat import jobs_text
from adapters.console import (
    PLATFORM,
    WAIT_CHECK,
    ConsoleChat,
    ConsoleCourier,
    read_limited,
    silence,
    wanted_path,
)
from adapters.logs import JsonLines, one_line
from adapters.videofiles import unwritable_because
from bot import doctor, messages
from bot.catalog import ValidationError
from bot.config import ConfigError, Settings, is_local_host, load_settings
from bot.devtools.clips import sample_photo
from bot.devtools.simulator import Simulator
from bot.engine import Engine, StoreUnavailable
from bot.jobs import Accepted, GenerationRequest, Job, JobState, UserRef
from bot.ops_http import OpsListener
from bot.store.copy import (
    MEDIA_BYTES,
    CopyFailed,
    CopyMismatch,
    CopyProgress,
    CopyRefused,
    copy_between,
    described,
    passwords,
    shown,
)

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config.toml")
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
CLI_PLATFORM = "cli"  # the user of `generate`: cli:<login name>
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SETTLE_WAIT = 5.0  # seconds `generate` waits at most for a delivered job's commit
ALL, FRONT, WORKER = "all", "front", "worker"  # `run --role`: what one process of the bot does
ROLES = (ALL, FRONT, WORKER)


class ChatAdapter(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def start_problem(self, error: Exception) -> str | None:
        """One line saying why ``start`` failed, if the error is one the platform knows."""
        ...

    def ready(self) -> bool:
        """Connected to its platform now (``/readyz`` of the operations listener)."""
        ...


def main(command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run one command; configuration problems are one line on stderr, never a traceback."""
    try:
        return asyncio.run(command())
    except ConfigError as err:
        fail(str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


# Every configured secret, masked in whatever fail() prints (set by redact_secrets).
_secrets: list[str] = []


# The JSON log's formatter once [log] format = "json" is read (use_log_format), else None.
_json_lines: list[JsonLines] = []


def fail(text: str) -> None:
    """One line on stderr; configured secrets are masked, as in the log (a JSON line when
    the log is JSON, so a log collector reads it as it reads the others)."""
    line = ' '.join(mask(text).split())
    say(one_line(_json_lines[0], line) if _json_lines else f"kling-bot: {line}")


def say(text: str, stream: TextIO | None = None) -> bool:
    """A line on stderr (or ``stream``); False when that pipe is closed (its reader quit):
    the stream is then pointed at /dev/null, so nothing later (the exit's flush, a log
    line) fails on it again."""
    stream = stream or sys.stderr
    try:
        stream.write(f"{text}\n")
        stream.flush()
    except (BrokenPipeError, ConnectionResetError):
        silence(stream)
        return False
    except (OSError, ValueError):  # closed, or a disk that failed: nothing more to do
        return False
    return True


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _Redacting(logging.Formatter):
    """Masks secrets in the finished log text (message, traceback, stack), whatever library
    wrote it: masking the final text is the one place nothing slips past."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return mask(self.inner.format(record))


def mask(text: str) -> str:
    """``text`` with every configured secret replaced by ``[secret]``."""
    for secret in _secrets:
        text = text.replace(secret, "[secret]")
    return text


def redact_secrets(secrets: list[str]) -> None:
    _secrets[:] = sorted(set(_secrets) | set(secrets), key=len, reverse=True)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, _Redacting):
            handler.setFormatter(_Redacting(handler.formatter))


def use_log_format(log_format: str) -> None:
    """``[log] format``: "json" makes every log line (and every ``fail`` line) one JSON
    object; "text", the default, leaves the log as ``configure_logging`` set it."""
    if log_format != "json" or _json_lines:
        return
    _json_lines.append(JsonLines(mask))
    logging.captureWarnings(True)  # a library's warning is a log line too, not bare text on stderr
    for handler in logging.getLogger().handlers:
        handler.setFormatter(_Redacting(_json_lines[0]))


def settings_from(path: Path | None) -> Settings:
    """The config file given, else ./config.toml if present, else the defaults."""
    settings = load_settings(path if path is not None
                             else DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    redact_secrets(settings.secrets)
    use_log_format(settings.log.format)
    return settings


# Seconds the simulator takes to make a finished task's clip, on top of its job time.
CLIP_ALLOWANCE = 0.3
# WaveSpeed jobs at once in the demo: one, so a second job visibly waits in the queue.
DEMO_SLOTS = 1


def simulated(settings: Settings, base_url: str, *, job_seconds: float) -> Settings:
    """Point settings at a local simulator whose jobs take ``job_seconds``: they are short,
    so poll often, and their run time is known, so progress bars follow it. Storage is
    ``simulated_storage``'s business."""
    return settings.with_wavespeed(base_url=base_url, api_key="simulator",
                                   poll_interval=min(settings.wavespeed.poll_interval, 0.5),
                                   expected_run_seconds=job_seconds + CLIP_ALLOWANCE)


def simulated_storage(settings: Settings, inside: Path | None = None) -> Settings:
    """The one place simulated runs get their own database and videos, so a try of the
    simulator never spends, or even sees, the real credits: in the folder ``inside``
    (the demo's throwaway one), else beside the configured ones
    (``kling-bot.sqlite`` -> ``kling-bot-simulated.sqlite``)."""
    if inside is not None:
        path, videos_dir = inside / "demo.sqlite", str(inside / "videos")
    else:
        configured = Path(settings.storage.path)
        path = configured.with_name(f"{configured.stem}-simulated{configured.suffix}")
        videos_dir = f"{settings.storage.videos_dir.rstrip('/')}-simulated"
    # Never the configured PostgreSQL database either: a simulated job is not a real one.
    return replace(settings, storage=replace(settings.storage, path=str(path), url="", videos_dir=videos_dir))


async def _backend(settings: Settings, simulate: bool, *, job_seconds: float
                   ) -> tuple[Settings | None, Simulator | None]:
    """Settings pointed at a fresh simulator, or checked to have an API key."""
    if simulate:
        simulator = Simulator(job_seconds=job_seconds)
        return simulated(simulated_storage(settings), await simulator.start(), job_seconds=job_seconds), simulator
    if not settings.wavespeed.api_key:
        fail(messages.NO_API_KEY)
        return None, None
    return settings, None


def _chat_adapters(settings: Settings, engine: Engine) -> list[ChatAdapter]:
    adapters: list[ChatAdapter] = []
    # Imported only when configured: the demo and generate need neither library.
    if settings.telegram.token:
        from adapters.telegram import TelegramAdapter
        adapters.append(TelegramAdapter(settings, engine))
    if settings.discord.token:
        from adapters.discord import DiscordAdapter
        adapters.append(DiscordAdapter(settings, engine))
    return adapters


def _deliveries(settings: Settings, engine: Engine) -> list[ChatAdapter]:
    """A worker's couriers, one per configured platform, over HTTP only: no gateway, no updates."""
    deliveries: list[ChatAdapter] = []
    if settings.telegram.token:
        from adapters.telegram.delivery import TelegramDelivery
        deliveries.append(TelegramDelivery(settings, engine))
    if settings.discord.token:
        from adapters.discord.delivery import DiscordDelivery
        deliveries.append(DiscordDelivery(settings, engine))
    return deliveries


async def run_bots(config: Path | None, *, simulate: bool, role: str = ALL) -> int:
    """``kling-bot run``: the configured chat platforms, one engine, until Ctrl+C. ``role``:
    ``all`` receives chat events and makes the videos; ``front`` receives, answers and
    accepts jobs but drives none; ``worker`` drives jobs (its own and unowned ones of its
    platforms) and delivers them through the platforms' HTTP APIs, receiving nothing."""
    settings = settings_from(config)
    if not (settings.telegram.token or settings.discord.token):
        fail(messages.NO_WORKER_CHAT_BOT if role == WORKER else messages.NO_CHAT_BOT)
        return EXIT_USAGE
    ready, simulator = await _backend(settings, simulate, job_seconds=5.0)
    if ready is None:
        return EXIT_USAGE
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    engine: Engine | None = None
    adapters: list[ChatAdapter] = []
    ops: OpsListener | None = None
    try:
        # Start-up: a problem here is one line naming it (secrets masked), never a traceback.
        try:
            engine = await Engine.from_settings(ready)
            # Jobs an interrupted `generate` left at WaveSpeed are followed here too; not by a
            # worker, which may run on another machine than the file the video goes to.
            if role == ALL:
                engine.register(CLI_PLATFORM, ConsoleCourier(sys.stderr, Path.cwd(),
                                                             fallback_dir=Path(ready.storage.videos_dir)))
            adapters = _deliveries(ready, engine) if role == WORKER else _chat_adapters(ready, engine)
            if ready.http.listen:  # up before the platforms connect: /readyz says what is missing meanwhile
                ops = OpsListener(ready.http.listen, engine.store,
                                  {platform_of(adapter): adapter.ready for adapter in adapters},
                                  credit_usd=ready.quota.credit_usd)
                try:
                    await ops.start()
                except OSError as err:
                    fail(messages.ops_cannot_listen(ready.http.listen, str(err.strerror or err)))
                    return EXIT_USAGE
            if role == ALL:
                await engine.start()
            elif role == FRONT:
                await engine.start(drive=False)  # accepts jobs for the workers; claims none
        except Exception as err:
            fail(messages.start_failed("kling-bot", _described(err)))
            return EXIT_USAGE
        for adapter in adapters:
            if problem := await _start(adapter):
                fail(problem)
                return EXIT_USAGE
        # A worker drives jobs once its couriers are logged in: one it takes over is delivered at once.
        if role == WORKER:
            try:
                await engine.start()
            except Exception as err:
                fail(messages.start_failed("kling-bot", _described(err)))
                return EXIT_USAGE
        names = [type(a).__name__ for a in adapters]
        print(messages.running_banner(names) if role == ALL else messages.role_banner(role, names), flush=True)
        await stop.wait()
    finally:
        if ops is not None:
            await _quietly(ops.stop())
        await _shut_down(adapters, engine, within=ready.storage.lease_seconds * STOP_SHARE, simulated=simulate)
        if simulator:
            await simulator.close()
    return 0


def platform_of(adapter: ChatAdapter) -> str:
    """The platform a chat adapter or courier serves, as ``/readyz`` names it ("telegram")."""
    return type(adapter).__name__.removesuffix("Adapter").removesuffix("Delivery").lower()


# Of [storage] lease_seconds, what a stop may take: the rest is for the interpreter's exit,
# so the process is gone before another one may take its jobs over anyway.
STOP_SHARE = 0.8


async def _shut_down(adapters: list[ChatAdapter], engine: Engine | None, *, within: float,
                     simulated: bool) -> None:
    """Stop the chat adapters (half of ``within`` at most), then the engine, handing its
    jobs over, in what is left. A step still hanging then (a chat server that stopped
    answering) is given up: its leases lapse by themselves, and the database closes with
    the process. A simulated run's jobs at its simulator go back to the queue."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        async with asyncio.timeout(within / 2):
            for adapter in adapters:
                await _quietly(adapter.stop())
    except TimeoutError:
        log.warning("chat adapters not stopped within %.1fs; stopping the engine", within / 2)
    if engine is None:
        return
    try:
        async with asyncio.timeout_at(deadline):
            await engine.stop(requeue_lost=simulated)
            await engine.close()
    except TimeoutError:
        log.warning("engine not stopped within %.1fs ([storage] lease_seconds); its leases lapse", within)


async def _start(adapter: ChatAdapter) -> str | None:
    """Start a chat adapter; None when it runs, else the one-line reason it does not."""
    try:
        await adapter.start()
    except Exception as err:
        return adapter.start_problem(err) or messages.start_failed(type(adapter).__name__, _described(err))
    return None


def _described(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


async def _quietly(step: Coroutine[Any, Any, None]) -> None:
    """A shutdown step whose failure is logged, so the others still run."""
    try:
        await step
    except Exception as err:
        log.info("shutdown step failed: %s: %s", type(err).__name__, err)


async def run_demo(photo_path: Path | None, output_dir: Path, job_seconds: float) -> int:
    """``kling-bot demo``: the simulator and a terminal chat; a tour when stdin is empty.
    Commands are read while jobs run; at the end of input the running jobs are waited for."""
    defaults = load_settings(None)
    try:
        photo = read_limited(photo_path, defaults.media.max_download_bytes, "photo") \
            if photo_path else sample_photo()
    except OSError as err:
        fail(messages.cannot_read_input("photo", photo_path, str(err.strerror or err)))
        return EXIT_USAGE
    except ValidationError as err:
        fail(str(err))
        return EXIT_USAGE
    simulator = Simulator(job_seconds=job_seconds)
    base_url = await simulator.start()
    settings = defaults.with_wavespeed(max_concurrent=DEMO_SLOTS)
    with tempfile.TemporaryDirectory(prefix="kling-demo-") as state, _terminal_restored():
        engine = await Engine.from_settings(simulated(simulated_storage(settings, Path(state)), base_url,
                                                job_seconds=job_seconds))
        courier = ConsoleCourier(sys.stdout, output_dir)
        engine.register(PLATFORM, courier)
        await engine.start()
        chat = ConsoleChat(engine, courier, UserRef(PLATFORM, getpass.getuser(), "you"), photo)
        closed = asyncio.Event()  # stdout's reader went away (`demo | head`): end quietly
        loop = asyncio.get_running_loop()
        courier.screen.on_close = lambda: _set_from_any_thread(loop, closed)
        chat.say(messages.demo_banner(base_url, output_dir))
        try:
            await _until_set(_converse(chat), closed)
        finally:
            await engine.close()
            await simulator.close()
    return 0


async def _converse(chat: ConsoleChat) -> None:
    """Commands from stdin, each handled at once (jobs run meanwhile); the tour when
    there are none; then the jobs still running are waited for."""
    ran_any = False
    typed = sys.stdin.isatty()  # a terminal echoes what is typed; a pipe's lines are shown
    while (line := await chat.read_command()) is not None:
        if not line.strip():
            continue
        if not typed:
            chat.say(f"> {line.strip()}")
        ran_any = True
        if not await chat.handle(line):
            break
    if not ran_any:  # nothing on stdin (e.g. run from a script): show a tour
        for line in messages.DEMO_TOUR:
            chat.say(f"> {line}")
            await chat.handle(line)
    await chat.finish()


@contextlib.contextmanager
def _terminal_restored() -> Iterator[None]:
    """The terminal's settings as they were, even when Ctrl+C ends the demo in the middle
    of a line being typed (line editing changes them while it reads)."""
    try:
        import termios
    except ImportError:  # not a POSIX system
        termios = None  # type: ignore[assignment]
    saved = None
    if termios is not None and sys.stdin.isatty():
        with contextlib.suppress(termios.error, OSError, ValueError):
            saved = termios.tcgetattr(sys.stdin.fileno())
    try:
        yield
    finally:
        if termios is not None and saved is not None:
            with contextlib.suppress(termios.error, OSError, ValueError):
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


async def run_generate(config: Path | None, build_request: Callable[[int], GenerationRequest],
                       output: str | None, *, simulate: bool) -> int:
    """``kling-bot generate``: one video, saved to ``output``; prints its path.
    ``build_request`` gets the most bytes it may read of each file it names.

    The output place is checked before anything is paid. Stopped by a signal or a closed
    pipe, the job is settled: cancelled and refunded if nothing reached WaveSpeed (or the
    simulator, which ends with this run, had it), else left to the next ``generate`` or
    ``run`` on the database, which finishes it (and any such job it finds) and saves the
    video where this one was asked to."""
    settings, simulator = await _backend(settings_from(config), simulate, job_seconds=2.0)
    if settings is None:
        return EXIT_USAGE
    try:
        return await _generate(settings, build_request, output, simulated=simulator is not None)
    finally:
        if simulator:
            await simulator.close()


async def _generate(settings: Settings, build_request: Callable[[int], GenerationRequest],
                    output: str | None, *, simulated: bool = False) -> int:
    save_to = _output_place(output)
    if isinstance(save_to, str):
        fail(save_to)
        return EXIT_USAGE
    try:
        request = build_request(settings.media.max_download_bytes)
    except (ValidationError, OSError) as err:
        fail(str(err))
        return EXIT_USAGE
    if why := await _unreachable(settings.wavespeed.base_url, settings.wavespeed.request_timeout):
        fail(messages.wavespeed_unreachable(settings.wavespeed.base_url, why))
        return EXIT_FAILED
    stopped: list[int] = []  # the signal (or SIGPIPE for a closed pipe) that ends the run
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop_by(signum: int) -> None:
        stopped.append(signum)
        loop.call_soon_threadsafe(stop.set)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop_by, signum)
    courier = ConsoleCourier(sys.stderr, Path.cwd(), fallback_dir=Path(settings.storage.videos_dir).absolute())
    courier.screen.on_close = lambda: stop_by(signal.SIGPIPE)
    watching = _watch_pipes(loop, (sys.stdout, sys.stderr), lambda: stop_by(signal.SIGPIPE))
    try:
        engine = await Engine.from_settings(settings)
    except StoreUnavailable as err:
        fail(str(err))
        return EXIT_USAGE
    engine.register(CLI_PLATFORM, courier)
    try:
        await engine.start(only_of=request.user)  # takes over this user's jobs a stopped run left
        left = [job.id for job in await engine.held_jobs()]
        if left:
            say(messages.finishing_left_jobs(left))
        answer = await engine.accept(replace(request, reply_to=save_to))
        if not isinstance(answer, Accepted) and left:
            # The jobs being finished here may be what stands in the way (the per-user
            # limit, credits they hold): finish them, then ask once more.
            await _follow(engine, courier, left, stop)
            if not stop.is_set():
                answer = await engine.accept(replace(request, reply_to=save_to))
        if not isinstance(answer, Accepted):
            fail(answer.text)
        own = answer.job.id if isinstance(answer, Accepted) else None
        results = await _follow(engine, courier, [*left, *([own] if own else [])], stop)
        if stop.is_set():
            # A simulated run's tasks end with its simulator: nothing is left to follow.
            withdrawn = await engine.stop(withdraw=[*([own] if own else []), *left], wavespeed_gone=simulated)
            for job in withdrawn.values():
                _say_withdrawn(job)
            return 128 + stopped[0] if stopped else EXIT_INTERRUPTED
        if own is None or results.get(own) is None:
            return EXIT_FAILED
        say(str(results[own]), sys.stdout)
        return 0
    finally:
        for fd in watching:
            loop.remove_reader(fd)
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        await engine.close()


def _output_place(output: str | None) -> dict[str, Any] | str:
    """Where the video goes, kept with the job (``reply_to``) so that a process taking it
    over saves it there too: a file, or a folder (an existing one, or a path ending in
    "/") to get ``kling-JOB.mp4`` inside; or why it cannot go there, before any cost."""
    into_folder = output is None or Path(output).is_dir() or output.endswith(("/", os.sep))
    path = Path(output or ".").expanduser().absolute()
    folder = path if into_folder else path.parent
    if why := unwritable_because(folder):
        return messages.output_not_writable(output, why)
    return {"save_to": str(path), "into_folder": into_folder}


async def _unreachable(base_url: str, seconds: float) -> str | None:
    """Why WaveSpeed cannot be reached at all (no network, no such host), or None: one
    look, bounded by ``request_timeout``, instead of a quarter hour of retried submits.
    Any HTTP answer counts as reachable; no key is sent."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session, \
                session.get(base_url, allow_redirects=False):
            return None
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        return _described(err)


async def _follow(engine: Engine, courier: ConsoleCourier, job_ids: list[int],
                  stop: asyncio.Event) -> dict[int, Path | None]:
    """Wait for these jobs' ends (or ``stop``); their saved paths (None: no video)."""
    ends = {job_id: courier.watch(job_id) for job_id in job_ids}
    while not stop.is_set():
        held = {job.id for job in await engine.held_jobs()}
        # A job that ended without its courier hearing of it is not waited for forever.
        waiting = [end for job_id, end in ends.items() if not end.done() and job_id in held]
        if not waiting:
            break
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait([*waiting, stopping], timeout=WAIT_CHECK, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    # The commit follows the courier's word (a round trip later on PostgreSQL): wait for
    # the jobs told of to end in the store, so that what comes next (an accept refused
    # by the per-user limit, tried again) sees them ended.
    settling_until = time.monotonic() + SETTLE_WAIT
    while not stop.is_set() and time.monotonic() < settling_until:
        held = {job.id for job in await engine.held_jobs()}
        if not any(end.done() and job_id in held for job_id, end in ends.items()):
            break
        await asyncio.sleep(0.02)
    return {job_id: end.result() if end.done() else None for job_id, end in ends.items()}


def _say_withdrawn(job: Job | None) -> None:
    if job is None or (job.state.finished and job.state != JobState.CANCELLED):
        return
    if job.state == JobState.CANCELLED:
        say(messages.job_cancelled(job.id, job.cost))
    else:
        say(messages.left_at_wavespeed(job.id, wanted_path(job, Path.cwd())))


def _watch_pipes(loop: asyncio.AbstractEventLoop, streams: tuple[TextIO, ...],
                 closed: Callable[[], None]) -> list[int]:
    """Call ``closed`` as soon as the reader of a pipe among ``streams`` goes away (`| head`),
    even while nothing is written to it; the descriptors watched."""
    watched = []
    for stream in streams:
        try:
            fd = stream.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue
            # A pipe's writing end shows an error (never input) once its reader is gone.
            loop.add_reader(fd, _on_pipe_event, loop, fd, closed)
        except (OSError, ValueError, AttributeError):
            continue
        watched.append(fd)
    return watched


def _on_pipe_event(loop: asyncio.AbstractEventLoop, fd: int, closed: Callable[[], None]) -> None:
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    if any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0)):
        loop.remove_reader(fd)
        closed()


def _set_from_any_thread(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
        loop.call_soon_threadsafe(event.set)


async def _until_set(work: Coroutine[Any, Any, None], event: asyncio.Event) -> None:
    """Run ``work`` until it ends or ``event`` is set (then it is cancelled)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(event.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def opened_engine(settings: Settings, *, existing: bool = False) -> AsyncIterator[Engine | None]:
    """An engine on the store ``settings`` name, for one command (nothing started: it
    drives no job), closed after it; None, the reason said in one line, when the store
    cannot be opened, or (``existing``) when it is a SQLite file not there: a command run
    from the wrong folder must not make an empty database and report on it (0 jobs), or
    pause, ban or credit there while the bot runs on the real one."""
    database = settings.storage.sqlite_file
    if existing and database is not None and not database.exists():
        fail(messages.no_database(str(database.absolute())))
        yield None
        return
    try:
        engine = await Engine.from_settings(settings)
    except StoreUnavailable as err:
        fail(str(err))
        yield None
        return
    try:
        yield engine
    finally:
        await engine.close()


async def run_jobs(config: Path | None, *, simulate: bool) -> int:
    """``kling-bot jobs``: the command line user's jobs, running and recent."""
    settings = settings_from(config)
    async with opened_engine(simulated_storage(settings) if simulate else settings) as engine:
        if engine is None:
            return EXIT_USAGE
        user = cli_user()
        running = await engine.jobs_of(user)
        ended = await engine.history(user)
        if not running and not ended:
            say(messages.NO_CLI_JOBS, sys.stdout)
            return 0
        lines = [await jobs_text(engine, user)] if running else []
        if ended:
            lines.append(messages.history_list([(job.id, job.label, job.state.value,
                                                 datetime.fromtimestamp(job.finished_at or job.created_at, UTC))
                                                for job in ended]))
        say("\n".join(lines), sys.stdout)
        return 0


async def run_models(config: Path | None, *, simulate: bool) -> int:
    """``kling-bot models``: the models on offer with their prices, from WaveSpeed's list now."""
    settings, simulator = await _backend(settings_from(config), simulate, job_seconds=2.0)
    if settings is None:
        return EXIT_USAGE
    try:
        async with opened_engine(settings) as engine:
            if engine is None:
                return EXIT_USAGE
            await engine.refresh_models()
            say(engine.models_text(), sys.stdout)
            return 0
    finally:
        if simulator:
            await simulator.close()


async def run_doctor(config: Path | None, *, quick: bool) -> int:
    """``kling-bot doctor``: one line per check on stdout, then a summary; 0 only when all pass."""
    try:
        settings: Settings | ConfigError = settings_from(config)  # its secrets are masked in the log too
    except ConfigError as err:
        settings = err
    from_file = config is not None or DEFAULT_CONFIG.is_file()
    checks = await doctor.diagnose(settings, from_file=from_file, quick=quick)
    for check in checks:
        say(str(check), sys.stdout)
    failed = sum(not check.ok for check in checks)
    say(messages.doctor_summary(failed, len(checks)), sys.stdout)
    return EXIT_FAILED if failed else 0


async def run_stats(config: Path | None, days: int, *, as_json: bool, chart: Path | None) -> int:
    """``kling-bot stats``: the figures /stats shows, as text or JSON (and the chart, to a file)."""
    async with opened_engine(settings_from(config), existing=True) as engine:
        if engine is None:
            return EXIT_USAGE
        figures = await engine.stats(days)
        if chart is not None:
            try:
                chart.write_bytes(figures.chart_png())
            except OSError as err:
                fail(messages.cannot_write_chart(chart, str(err.strerror or err)))
                return EXIT_USAGE
        say(json.dumps(figures.as_json(), indent=2) if as_json else figures.text(), sys.stdout)
        return 0


async def run_db_copy(source: str, target: str, *, force: bool) -> int:
    """``kling-bot db copy``: every row and media byte of one database into another,
    counts checked. A progress bar on a terminal, a line per table elsewhere."""
    redact_secrets(passwords(source) + passwords(target))
    view = _CopyProgressView(sys.stderr, sys.stdout)
    try:
        counts = await copy_between(source, target, force=force, now=time.time(), progress=view)
    except CopyRefused as err:
        view.end()
        fail(str(err))
        return EXIT_USAGE
    except (CopyFailed, CopyMismatch) as err:
        view.end()
        fail(str(err))
        return EXIT_FAILED
    view.end()
    say(messages.copy_done(shown(source), shown(target), described(counts)), sys.stdout)
    return 0


class _CopyProgressView:
    """A carriage-return bar on a terminal (redrawn at most 10 times a second); elsewhere
    one plain line per table copied."""

    REDRAW = 0.1  # seconds between redraws of the bar

    def __init__(self, terminal: TextIO, lines: TextIO):
        self.terminal, self.lines = terminal, lines
        self.on_terminal = terminal.isatty()
        self.drawn_at = 0.0
        self.drawn = False

    def __call__(self, progress: CopyProgress) -> None:
        if not self.on_terminal:
            if progress.table_done:
                say(messages.copy_table_done(progress.table, progress.done[progress.table]), self.lines)
            return
        moment = time.monotonic()
        if not progress.table_done and moment - self.drawn_at < self.REDRAW:
            return
        self.drawn_at = moment
        bar = messages.copy_bar(progress.fraction, progress.table, progress.done[progress.table],
                                progress.total[progress.table], progress.done[MEDIA_BYTES],
                                progress.total[MEDIA_BYTES])
        with contextlib.suppress(OSError, ValueError):
            self.terminal.write(f"\r{bar}\x1b[K")  # back to the line's start; clear what is left
            self.terminal.flush()
            self.drawn = True

    def end(self) -> None:
        """Leave the bar's line, so what follows starts on a line of its own."""
        if self.drawn:
            say("", self.terminal)
            self.drawn = False


def cli_user() -> UserRef:
    """Who runs ``generate``: the login name, on the command line's own platform."""
    return UserRef(CLI_PLATFORM, getpass.getuser(), getpass.getuser())


async def serve_simulator(host: str, port: int, job_seconds: float) -> int:
    """``kling-bot simulator``: a WaveSpeed-compatible server until Ctrl+C. It accepts any
    API key, so it listens on this computer only."""
    if not is_local_host(host):
        fail(messages.simulator_not_local(host))
        return EXIT_USAGE
    if not 0 <= port <= 65535:
        fail(messages.simulator_bad_port(port))
        return EXIT_USAGE
    simulator = Simulator(job_seconds=job_seconds)
    try:
        url = await simulator.start(host, port)
    except OSError as err:
        await simulator.close()
        fail(messages.simulator_cannot_listen(host, port, str(err.strerror or err)))
        return EXIT_USAGE
    say(messages.simulator_listening(url, job_seconds), sys.stdout)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.close()
    return 0

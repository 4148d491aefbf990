"""The composition root: settings -> store -> engine -> adapters, signals and log redaction.

Each ``run_*`` coroutine is one command of ``kling-bot`` and returns its exit code;
``adapters/cli.py`` parses the arguments and calls them through ``main``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from adapters.console import PLATFORM, ConsoleChat, ConsoleCourier, max_bytes, read_limited
from bot import messages
from bot.catalog import ValidationError
from bot.config import ConfigError, Settings, load_settings
from bot.devtools.clips import sample_photo
from bot.devtools.simulator import Simulator
from bot.engine import Engine
from bot.jobs import Accepted, GenerationRequest, UserRef

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config.toml")
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class ChatAdapter(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def start_problem(self, error: Exception) -> str | None:
        """One line saying why ``start`` failed, if the error is one the platform knows."""
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


def fail(text: str) -> None:
    """One line on stderr; configured secrets are masked, as in the log."""
    for secret in _secrets:
        text = text.replace(secret, "[secret]")
    print(f"kling-bot: {' '.join(text.split())}", file=sys.stderr)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class _Redact(logging.Filter):
    """Masks secrets in every log line, whatever library wrote it."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "[secret]")
            record.msg, record.args = message, None
        return True


def redact_secrets(secrets: list[str]) -> None:
    _secrets[:] = sorted(set(_secrets) | set(secrets), key=len, reverse=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redact(secrets))


def settings_from(path: Path | None) -> Settings:
    """The config file given, else ./config.toml if present, else the defaults."""
    settings = load_settings(path if path is not None
                             else DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    redact_secrets(settings.secrets)
    return settings


# Seconds the simulator takes to make a finished task's clip, on top of its job time.
CLIP_ALLOWANCE = 0.3
# WaveSpeed jobs at once in the demo: one, so a second job visibly waits in the queue.
DEMO_SLOTS = 1


def simulated(settings: Settings, base_url: str, *, job_seconds: float,
              storage_dir: Path | None = None) -> Settings:
    """Point settings at a local simulator whose jobs take ``job_seconds``: they are short,
    so poll often, and their run time is known, so progress bars follow it."""
    settings = settings.with_wavespeed(base_url=base_url, api_key="simulator",
                                       poll_interval=min(settings.wavespeed.poll_interval, 0.5),
                                       expected_run_seconds=job_seconds + CLIP_ALLOWANCE)
    if storage_dir is not None:
        settings = replace(settings, storage=replace(
            settings.storage, path=str(storage_dir / "demo.sqlite"),
            videos_dir=str(storage_dir / "videos")))
    return settings


async def _backend(settings: Settings, simulate: bool, *, job_seconds: float
                   ) -> tuple[Settings | None, Simulator | None]:
    """Settings pointed at a fresh simulator, or checked to have an API key."""
    if simulate:
        simulator = Simulator(job_seconds=job_seconds)
        return simulated(settings, await simulator.start(), job_seconds=job_seconds), simulator
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


async def run_bots(config: Path | None, *, simulate: bool) -> int:
    """``kling-bot run``: every configured chat adapter, one engine, until Ctrl+C."""
    settings = settings_from(config)
    if not (settings.telegram.token or settings.discord.token):
        fail(messages.NO_CHAT_BOT)
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
    try:
        # Start-up: a problem here is one line naming it (secrets masked), never a traceback.
        try:
            engine = Engine.from_settings(ready)
            adapters = _chat_adapters(ready, engine)
            await engine.start()
        except Exception as err:
            fail(messages.start_failed("kling-bot", _described(err)))
            return EXIT_USAGE
        for adapter in adapters:
            if problem := await _start(adapter):
                fail(problem)
                return EXIT_USAGE
        print(messages.running_banner([type(a).__name__ for a in adapters]), flush=True)
        await stop.wait()
    finally:
        for adapter in adapters:
            await _quietly(adapter.stop())
        if engine is not None:
            await engine.close()
        if simulator:
            await simulator.close()
    return 0


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
        photo = read_limited(photo_path, max_bytes(defaults.media.max_download_mb), "photo") \
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
        engine = Engine.from_settings(simulated(settings, base_url, job_seconds=job_seconds,
                                                storage_dir=Path(state)))
        courier = ConsoleCourier(sys.stdout, output_dir)
        engine.register(PLATFORM, courier)
        await engine.start()
        chat = ConsoleChat(engine, courier, UserRef(PLATFORM, getpass.getuser(), "you"), photo)
        chat.say(messages.demo_banner(base_url, output_dir))
        try:
            await _converse(chat)
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
                       output: Path | None, *, simulate: bool) -> int:
    """``kling-bot generate``: one video, saved to ``output``; prints its path.
    ``build_request`` gets the most bytes it may read of each file it names."""
    settings, simulator = await _backend(settings_from(config), simulate, job_seconds=2.0)
    if settings is None:
        return EXIT_USAGE
    try:
        request = build_request(max_bytes(settings.media.max_download_mb))
    except (ValidationError, OSError) as err:
        fail(str(err))
        if simulator:
            await simulator.close()
        return EXIT_USAGE
    engine = Engine.from_settings(settings)
    courier = ConsoleCourier(sys.stderr, Path("."), target=output)
    engine.register(request.user.platform, courier)
    await engine.start(resume=False)
    try:
        answer = await engine.accept(request)
        if not isinstance(answer, Accepted):
            fail(answer.text)
            return EXIT_FAILED
        if output is None:
            courier.target = Path(f"kling-{answer.job.id}.mp4")
        result = await courier.watch(answer.job.id)
        if result is None:
            return EXIT_FAILED
        print(result)
        return 0
    finally:
        await engine.close()
        if simulator:
            await simulator.close()


async def serve_simulator(host: str, port: int, job_seconds: float) -> int:
    """``kling-bot simulator``: a WaveSpeed-compatible server until Ctrl+C."""
    simulator = Simulator(job_seconds=job_seconds)
    url = await simulator.start(host, port)
    print(messages.simulator_listening(url, job_seconds), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.close()
    return 0

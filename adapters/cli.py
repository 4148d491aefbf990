"""``kling-bot``: the command line, and the place where adapters and the core are wired."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from adapters.console import PLATFORM, ConsoleChat, ConsoleCourier
from bot.catalog import Params, ValidationError
from bot.clips import sample_photo
from bot.config import ConfigError, Settings, load_settings
from bot.jobs import GenerationRequest, UserRef
from bot.service import Engine
from bot.simulator import Simulator

DEFAULT_CONFIG = Path("config.toml")
DEMO_TOUR = ["/help", "/effect hula", "/animate --duration 5 the sun smiles and waves", "/quota"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-bot",
        description="Turn a photo into a short Kling AI video through WaveSpeedAI.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="chat with the bot in this terminal, against the offline simulator",
        description="Start the offline WaveSpeed simulator and a terminal chat. Commands are read "
                    "from standard input; with none, a short tour runs. No tokens needed.")
    demo.add_argument("photo", nargs="?", type=Path, help="photo to use (default: a sample image)")
    demo.add_argument("--output-dir", type=Path, default=Path("kling-demo"),
                      help="where videos are saved (default: ./kling-demo)")
    demo.add_argument("--job-seconds", type=float, default=3.0,
                      help="how long each simulated job takes (default: 3)")

    gen = sub.add_parser(
        "generate", help="make one video and exit (0 on success)",
        description="Make one video from IMAGE and save it. Uses WaveSpeed with the configured "
                    "API key, or the offline simulator with --simulate.")
    gen.add_argument("image", type=Path, help="the photo to animate")
    what = gen.add_mutually_exclusive_group(required=True)
    what.add_argument("--effect", help="one of the 77 effect names (e.g. hula)")
    what.add_argument("--prompt", help="describe the motion (image-to-video models)")
    what.add_argument("--audio", type=Path, help="audio to lip-sync (avatar model)")
    gen.add_argument("--model", help="v1.6, v2.1 (default) or master; avatar/effects are implied")
    gen.add_argument("--duration", type=int, choices=(5, 10), help="clip length in seconds")
    gen.add_argument("--negative-prompt", help="what to avoid")
    gen.add_argument("--guidance", type=float, help="0 to 1: how closely to follow the prompt")
    gen.add_argument("--end-image", type=Path, help="last frame (master model only)")
    gen.add_argument("--avatar-prompt", dest="avatar_prompt", help="optional prompt with --audio")
    gen.add_argument("-o", "--output", type=Path, help="where to save the MP4 (default: ./kling-JOB.mp4)")
    gen.add_argument("--simulate", action="store_true", help="use the offline simulator, not WaveSpeed")
    gen.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")

    run = sub.add_parser(
        "run", help="run the chat bots whose tokens are configured",
        description="Start every chat adapter with a token in the config (Telegram: "
                    "[telegram] token or TELEGRAM_BOT_TOKEN; Discord: [discord] token or "
                    "DISCORD_BOT_TOKEN), sharing one engine and database.")
    run.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")
    run.add_argument("--simulate", action="store_true",
                     help="use the offline simulator instead of WaveSpeed (no API key needed)")

    sim = sub.add_parser("simulator", help="run the WaveSpeed simulator as a server",
                         description="Serve the WaveSpeed-compatible simulator until Ctrl+C.")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--job-seconds", type=float, default=5.0, help="how long each job takes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return asyncio.run(run_bots(args))
        if args.command == "demo":
            return asyncio.run(run_demo(args))
        if args.command == "generate":
            return asyncio.run(run_generate(args))
        if args.command == "simulator":
            from bot.simulator import serve_forever
            asyncio.run(serve_forever(args.host, args.port, args.job_seconds))
            return 0
    except ConfigError as err:
        print(f"kling-bot: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _settings_from(path: Path | None) -> Settings:
    settings = load_settings(path if path is not None
                             else DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    redact_secrets(settings.secrets)
    return settings


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
    for handler in logging.getLogger().handlers:
        handler.addFilter(_Redact(secrets))


async def _backend(settings: Settings, simulate: bool, *, job_seconds: float
                   ) -> tuple[Settings | None, Simulator | None]:
    """Settings pointed at a fresh simulator, or checked to have an API key."""
    if simulate:
        simulator = Simulator(job_seconds=job_seconds)
        return _simulated(settings, await simulator.start()), simulator
    if not settings.wavespeed.api_key:
        print("kling-bot: no WaveSpeed API key: set [wavespeed] api_key in config.toml or the "
              "WAVESPEED_API_KEY environment variable (or try --simulate).", file=sys.stderr)
        return None, None
    return settings, None


async def run_bots(args: argparse.Namespace) -> int:
    """``kling-bot run``: every configured chat adapter, one engine, until Ctrl+C."""
    settings = _settings_from(args.config)
    if not (settings.telegram.token or settings.discord.token):
        print("kling-bot: no chat bot is configured. Add a Telegram bot token from @BotFather "
              "([telegram] token or TELEGRAM_BOT_TOKEN) or a Discord bot token ([discord] token "
              "or DISCORD_BOT_TOKEN) to config.toml.", file=sys.stderr)
        return 2
    settings, simulator = await _backend(settings, args.simulate, job_seconds=5.0)
    if settings is None:
        return 2
    engine = Engine.from_settings(settings)
    adapters = []
    # Imported only when configured: the demo and generate need neither library.
    if settings.telegram.token:
        from adapters.telegram_bot import TelegramAdapter
        adapters.append(TelegramAdapter(settings, engine))
    if settings.discord.token:
        from adapters.discord_bot import DiscordAdapter
        adapters.append(DiscordAdapter(settings, engine))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await engine.start()
    try:
        for adapter in adapters:
            await adapter.start()
        print(f"kling-bot is running ({', '.join(type(a).__name__ for a in adapters)}). "
              "Ctrl+C stops; unfinished jobs resume at the next start.", flush=True)
        await stop.wait()
    finally:
        for adapter in adapters:
            await adapter.stop()
        await engine.close()
        if simulator:
            await simulator.close()
    return 0


def _simulated(settings: Settings, base_url: str, *, storage_dir: Path | None = None) -> Settings:
    """Point settings at a local simulator; jobs there are short, so poll often."""
    settings = settings.with_wavespeed(base_url=base_url, api_key="simulator",
                                       poll_interval=min(settings.wavespeed.poll_interval, 0.5))
    if storage_dir is not None:
        settings = replace(settings, storage=replace(
            settings.storage, path=str(storage_dir / "demo.sqlite"),
            videos_dir=str(storage_dir / "videos")))
    return settings


async def run_demo(args: argparse.Namespace) -> int:
    photo = args.photo.read_bytes() if args.photo else sample_photo()
    simulator = Simulator(job_seconds=args.job_seconds)
    base_url = await simulator.start()
    with tempfile.TemporaryDirectory(prefix="kling-demo-") as state:
        settings = _simulated(load_settings(None), base_url, storage_dir=Path(state))
        engine = Engine.from_settings(settings)
        courier = ConsoleCourier(sys.stdout, args.output_dir)
        engine.register(PLATFORM, courier)
        await engine.start()
        chat = ConsoleChat(engine, courier, UserRef(PLATFORM, getpass.getuser(), "you"), photo)
        print(f"kling-bot demo: offline WaveSpeed simulator at {base_url}; videos go to "
              f"{args.output_dir}/. Type /help, or /quit to leave.", flush=True)
        try:
            ran_any = False
            while True:
                line = await _read_line("> " if sys.stdin.isatty() else "")
                if line is None:
                    break
                if not line.strip():
                    continue
                if not sys.stdin.isatty():
                    print(f"> {line.strip()}", flush=True)
                ran_any = True
                if not await chat.handle(line):
                    break
            if not ran_any:  # nothing on stdin (e.g. run from a script): show a tour
                for line in DEMO_TOUR:
                    print(f"> {line}", flush=True)
                    await chat.handle(line)
        finally:
            await engine.close()
            await simulator.close()
    return 0


async def _read_line(prompt: str) -> str | None:
    try:
        return await asyncio.to_thread(input, prompt)
    except EOFError:
        return None


async def run_generate(args: argparse.Namespace) -> int:
    settings, simulator = await _backend(_settings_from(args.config), args.simulate, job_seconds=2.0)
    if settings is None:
        return 2
    try:
        request = _generate_request(args)
    except (ValidationError, OSError) as err:
        print(f"kling-bot: {_one_line(err)}", file=sys.stderr)
        return 2
    engine = Engine.from_settings(settings)
    courier = ConsoleCourier(sys.stderr, Path("."), target=args.output)
    engine.register("cli", courier)
    await engine.start(resume=False)
    try:
        answer = await engine.accept(request)
        if not hasattr(answer, "job"):
            print(f"kling-bot: {answer.text}", file=sys.stderr)
            return 1
        if args.output is None:
            courier.target = Path(f"kling-{answer.job.id}.mp4")
        result = await courier.watch(answer.job.id)
        if result is None:
            return 1
        print(result)
        return 0
    finally:
        await engine.close()
        if simulator:
            await simulator.close()


def _generate_request(args: argparse.Namespace) -> GenerationRequest:
    user = UserRef("cli", getpass.getuser(), getpass.getuser())
    image = _read(args.image, "image")
    end_image = _read(args.end_image, "end image") if args.end_image else None
    if args.effect:
        return GenerationRequest(user, "effect", image, Params(effect=args.effect), model=args.model)
    if args.audio:
        return GenerationRequest(user, "avatar", image, Params(prompt=args.avatar_prompt),
                                 model=args.model, audio=_read(args.audio, "audio"))
    params = Params(prompt=args.prompt, negative_prompt=args.negative_prompt,
                    guidance=args.guidance, duration=args.duration)
    return GenerationRequest(user, "animate", image, params, model=args.model, end_image=end_image)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ValidationError(f"cannot read the {what} {path}: {err.strerror or err}") from None


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())

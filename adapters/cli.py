"""``kling-bot``: the command line. Parses arguments; ``adapters/app.py`` does the work."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from adapters import admin_cli, app
from adapters.console import read_limited
from bot import catalog, messages
from bot.catalog import Params
from bot.jobs import GenerationRequest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kling-bot",
        description="Turn a photo into a short Kling AI video through WaveSpeedAI.",
        epilog="`kling-bot COMMAND --help` lists a command's options.")
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
                    "API key, or the offline simulator with --simulate. Exits 1 when the job is "
                    "refused or fails, 2 on a usage or configuration problem, 128+signal when "
                    "stopped (130 Ctrl+C, 143 SIGTERM, 141 a closed pipe).")
    gen.add_argument("image", type=Path, help="the photo to animate")
    what = gen.add_mutually_exclusive_group(required=True)
    what.add_argument("--effect", help=f"one of the {len(catalog.EFFECTS)} effect names (e.g. hula)")
    what.add_argument("--prompt", help="describe the motion (image-to-video models)")
    what.add_argument("--audio", type=Path, help="audio to lip-sync (avatar model)")
    gen.add_argument("--model", help="the image-to-video model with --prompt: a short name or a WaveSpeed id "
                                     f"(`kling-bot models` lists them; default {catalog.DEFAULT_ANIMATE_MODEL}, "
                                     "or [models] default); --effect and --audio have their own model")
    gen.add_argument("--duration", type=int,
                     help="clip length in seconds, with --prompt; the model decides which it makes "
                          "(5 or 10, or 3 to 15 for the newest models; default: the model's own)")
    gen.add_argument("--sound", action=argparse.BooleanOptionalAction, default=None,
                     help="with sound (--no-sound: silent), for models that make it")
    gen.add_argument("--aspect", help="aspect ratio, e.g. 16:9, for models that take one")
    gen.add_argument("--negative-prompt", help="what to avoid")
    gen.add_argument("--guidance", type=float,
                     help=f"{catalog.GUIDANCE_MIN:g} to {catalog.GUIDANCE_MAX:g}: how closely to follow the "
                          f"prompt (default: {catalog.GUIDANCE_DEFAULT:g})")
    gen.add_argument("--end-image", type=Path,
                     help="last frame, for models that take one (`kling-bot models` says which)")
    gen.add_argument("--avatar-prompt", dest="avatar_prompt", help="optional prompt with --audio")
    gen.add_argument("-o", "--output",  # a string: Path would drop the trailing "/" that names a folder
                     help="where to save the MP4 (default: ./kling-JOB.mp4); a folder gets kling-JOB.mp4 "
                          "inside; an existing file is never overwritten (a fresh -1, -2 name instead)")
    gen.add_argument("--simulate", action="store_true",
                     help="use the offline simulator, not WaveSpeed; simulated runs keep their own "
                          "database and credits, beside the configured ones")
    gen.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")

    run = sub.add_parser(
        "run", help="run the chat bots whose tokens are configured",
        description="Start every chat adapter with a token in the config (Telegram: "
                    "[telegram] token or TELEGRAM_BOT_TOKEN; Discord: [discord] token or "
                    "DISCORD_BOT_TOKEN), sharing one engine and database. With --role, the work "
                    "is split between processes, on any machines, sharing one PostgreSQL "
                    "database ([storage] url): fronts receive the chats, workers make the videos.")
    run.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")
    run.add_argument("--role", choices=app.ROLES, default=app.ALL,
                     help="all (default): receive chat events and make and deliver the videos, in "
                          "this process; front: receive chat events (Discord gateway, Telegram "
                          "polling or webhook), answer them and queue jobs, making none; worker: "
                          "make and deliver the queued jobs of the platforms whose tokens are "
                          "configured, through their HTTP APIs, receiving no chat events. Run any "
                          "number of each")
    run.add_argument("--simulate", action="store_true",
                     help="use the offline simulator instead of WaveSpeed (no API key needed); "
                          "simulated runs keep their own database and credits")

    jobs = sub.add_parser("jobs", help="list your generate jobs, running and recent",
                          description="The jobs `kling-bot generate` made for you (your login name) on "
                                      "the configured database: those still running (also ones a stopped "
                                      "generate left for the next run to finish) and the recent ones.")
    jobs.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")
    jobs.add_argument("--simulate", action="store_true",
                      help="the jobs of simulated runs, which keep their own database and credits")

    models = sub.add_parser("models", help="list the models on offer and their prices",
                            description="Read WaveSpeed's model list (GET /api/v3/models) as the bot does, "
                                        "keep it in the configured database, and print the models on offer "
                                        "([models] enabled) with their short names, what each adds, and the "
                                        "price per 5 s quoted by WaveSpeed (in credits of [quota] credit_usd).")
    models.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")
    models.add_argument("--simulate", action="store_true",
                        help="ask the offline simulator, not WaveSpeed (no API key needed)")

    stats = sub.add_parser("stats", help="what the bot did: jobs, spend, busiest users and places",
                           description="The figures /stats shows admins, from the configured database (every "
                                       "process sharing it counts): today and the last --days days, jobs by "
                                       "outcome (delivered, failed, cancelled, running; refunded besides), "
                                       "spend at WaveSpeed in USD, credits spent, the busiest users and places, "
                                       "failures by kind, purchases and refunds (today, the span and each of its days: "
                                       "credits bought, Telegram Stars, Discord purchases, credits taken "
                                       "back and those already spent), and the queue now. Days start at "
                                       "[quota] reset_hour_utc.")
    stats.add_argument("--days", type=_days, default=7, help="the longer span, in days: 1 to 366 (default: 7)")
    stats.add_argument("--json", action="store_true",
                       help="print the figures as one JSON object (money as decimal strings), with every "
                            "day of the last max(days, 14), their payments under \"payments\"")
    stats.add_argument("--chart", type=Path, metavar="FILE",
                       help="also write the chart of the last 14 days (jobs and spend) to FILE as a PNG")
    stats.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")

    sim = sub.add_parser("simulator", help="run the WaveSpeed simulator as a server",
                         description="Serve the WaveSpeed-compatible simulator on this computer until "
                                     "Ctrl+C; point [wavespeed] base_url at the address it prints. It "
                                     "accepts any API key.")
    sim.add_argument("--host", default="127.0.0.1",
                     help="the address to listen on: 127.0.0.1 (default), ::1 or localhost")
    sim.add_argument("--port", type=int, default=8765, help="the port to listen on (default: 8765; 0 picks a free one)")
    sim.add_argument("--job-seconds", type=float, default=5.0,
                     help="how long each simulated job takes (default: 5)")

    doctor = sub.add_parser(
        "doctor", help="check the config, database, API key, tokens, webhooks and encoders",
        description="Check that the bot can work with this config, changing nothing: the config file and "
                    "the folders in it, the database (reachable, writable, schema version), the WaveSpeed "
                    "key (bad key, no balance), each configured Telegram and Discord token, the webhook URLs "
                    "(seen from this machine) and PyAV's H.264 and AAC encoders. One line per check, with "
                    "the fix when it fails; no secret is printed. Exits 0 when every check passes, 1 when "
                    "any fails.")
    doctor.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")
    doctor.add_argument("--quick", action="store_true",
                        help="only the checks of this machine (config, folders, database, encoders), no "
                             "network call: cheap enough for a container health check every few seconds")

    db = sub.add_parser("db", help="database tools: copy a bot's database to another backend",
                        description="Tools for the bot's database (`kling-bot db COMMAND --help`).")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    copy = db_sub.add_parser(
        "copy", help="copy users, credits, jobs, media and questions to another database",
        description="Copy everything a bot keeps (users, the credit ledger, jobs with their leases "
                    "and settlements, their photos and audio, questions waiting for an answer) from one "
                    "database to another: SQLite to PostgreSQL, back, or between two of one kind. "
                    "Stop the bot first; its queued and running jobs come along, and the bot "
                    "started on the copy takes them over. The target is written in one transaction; "
                    "the counts (rows per table, media bytes) are checked afterwards. A progress bar "
                    "shows on a terminal. Exits 0 when the copy matches, 1 when it broke off or does not match, "
                    "2 when it was refused (nothing written).")
    copy.add_argument("--from", dest="source", required=True, metavar="DATABASE",
                      help="the bot's database: a SQLite file (it must exist) or a postgresql:// URL")
    copy.add_argument("--to", dest="target", required=True, metavar="DATABASE",
                      help="where to copy it: a SQLite file (created if missing) or a postgresql:// URL "
                           "(the database must exist; its tables are created)")
    copy.add_argument("--force", action="store_true",
                      help="replace everything the target already holds (without it, a target with any "
                           "row is refused). It never copies while a running bot holds leases on jobs "
                           "of either database: that bot would go on writing what the copy misses, and "
                           "two bots would then drive the same jobs")
    add_access_commands(sub)
    add_payments_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    app.configure_logging(args.verbose)
    if (done := run_access_command(args)) is not None:
        return done
    if args.command == "run":
        return app.main(lambda: app.run_bots(args.config, simulate=args.simulate, role=args.role))
    if args.command == "demo":
        return app.main(lambda: app.run_demo(args.photo, args.output_dir, args.job_seconds))
    if args.command == "generate":
        return app.main(lambda: app.run_generate(args.config, lambda limit: generate_request(args, limit),
                                                 args.output, simulate=args.simulate))
    if args.command == "db":
        return app.main(lambda: app.run_db_copy(args.source, args.target, force=args.force))
    if args.command == "models":
        return app.main(lambda: app.run_models(args.config, simulate=args.simulate))
    if args.command == "doctor":
        return app.main(lambda: app.run_doctor(args.config, quick=args.quick))
    if args.command == "jobs":
        return app.main(lambda: app.run_jobs(args.config, simulate=args.simulate))
    if args.command == "stats":
        return app.main(lambda: app.run_stats(args.config, args.days, as_json=args.json, chart=args.chart))
    return app.main(lambda: app.serve_simulator(args.host, args.port, args.job_seconds))


def _days(text: str) -> int:
    """``--days``: a whole number of days, 1 to 366."""
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= 366:
        raise argparse.ArgumentTypeError(messages.CLI_STATS_DAYS)
    return days


def generate_request(args: argparse.Namespace, max_bytes: int) -> GenerationRequest:
    """The request ``generate``'s arguments describe; reads the files they name, each up to
    ``max_bytes``. Every option given goes into the request, so the model's own checks
    refuse one it does not take (``--duration`` with ``--effect``) instead of ignoring it."""
    if args.avatar_prompt is not None and args.prompt is not None:
        raise catalog.ValidationError(messages.option_not_with("--avatar-prompt", "--audio"))
    user = app.cli_user()
    kind: catalog.Kind = "effect" if args.effect else "avatar" if args.audio else "animate"
    params = Params(effect=args.effect, prompt=args.prompt if args.prompt is not None else args.avatar_prompt,
                    negative_prompt=args.negative_prompt, guidance=args.guidance, duration=args.duration,
                    sound=args.sound, aspect=args.aspect)
    return GenerationRequest(
        user, kind, _read(args.image, "image", max_bytes), params, model=args.model,
        end_image=_read(args.end_image, "end image", max_bytes) if args.end_image else None,
        audio=_read(args.audio, "audio", max_bytes) if args.audio else None)


def _read(path: Path, what: str, max_bytes: int) -> bytes:
    try:
        return read_limited(path, max_bytes, what)
    except OSError as err:
        raise catalog.ValidationError(
            messages.cannot_read_input(what, path, str(err.strerror or err))) from None


def add_access_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``pause``, ``resume``, ``users`` and ``credits``: the admins' controls on the command line."""
    config_help = "TOML settings (default: ./config.toml if present)"
    key_help = "the user as platform:id, e.g. telegram:123456 or discord:123456789012345678"
    pause = sub.add_parser(
        "pause", help="pause the bot: refuse new requests, let queued jobs wait",
        description="Pause every process on the configured database within seconds (it holds across "
                    "restarts): new requests are refused with REASON, queued jobs wait, running jobs "
                    "finish. `kling-bot resume` lifts it.")
    pause.add_argument("reason", nargs="?", default="", help="why, shown to whoever asks meanwhile")
    pause.add_argument("--refund", action="store_true",
                       help="also cancel and refund every queued job not yet sent to WaveSpeed, telling "
                            "each owner in their chat")
    pause.add_argument("--config", type=Path, help=config_help)
    resume = sub.add_parser("resume", help="lift a pause", description="Accept requests again and start "
                                                                       "the queued jobs, on every process.")
    resume.add_argument("--config", type=Path, help=config_help)

    users = sub.add_parser("users", help="ban or unban users, list the bans",
                           description="Bans hold on every platform's chats and every process: a banned "
                                       "user's requests are refused politely and cost nothing.")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    ban = users_sub.add_parser("ban", help="ban a user")
    ban.add_argument("user", help=key_help)
    ban.add_argument("--reason", default="", help="why (kept for the admins)")
    unban = users_sub.add_parser("unban", help="lift a user's ban")
    unban.add_argument("user", help=key_help)
    listing = users_sub.add_parser("list", help="list the bans")
    for each in (ban, unban, listing):
        each.add_argument("--config", type=Path, help=config_help)

    credits = sub.add_parser("credits", help="show, grant or set a user's credits",
                             description="A user's credits on the configured database; the ledger "
                                         "rows say the command line made the change.")
    credits_sub = credits.add_subparsers(dest="credits_command", required=True)
    show = credits_sub.add_parser("show", help="a user's credits, daily allowance and ban")
    show.add_argument("user", help=key_help)
    grant = credits_sub.add_parser("grant", help="give lasting bonus credits (negative takes them away)")
    grant.add_argument("user", help=key_help)
    grant.add_argument("amount", type=_credits_given, help="credits to add (negative: to take away), "
                                                            f"up to {admin_cli.MAX_CREDITS} either way")
    set_ = credits_sub.add_parser("set", help="set what a user has now (today's allowance first, the rest bonus; "
                                              "purchased credits stay as they are)")
    set_.add_argument("user", help=key_help)
    set_.add_argument("amount", type=_not_negative,
                      help="daily and bonus credits they have after (purchased ones besides), "
                           f"0 to {admin_cli.MAX_CREDITS}")
    for each in (show, grant, set_):
        each.add_argument("--config", type=Path, help=config_help)


def _whole_number(text: str, lowest: int) -> int:
    """``text`` as a whole number of credits from ``lowest`` to ``admin_cli.MAX_CREDITS``
    (ASCII digits: far inside the database's integers, as the chats' /grant and /setcredits)."""
    highest = admin_cli.MAX_CREDITS
    if not re.fullmatch(r"[+-]?[0-9]{1,12}", text.strip(), re.ASCII) or not lowest <= int(text) <= highest:
        raise argparse.ArgumentTypeError(f"must be a whole number from {lowest} to {highest}")
    return int(text)


def _not_negative(text: str) -> int:
    return _whole_number(text, 0)


def _credits_given(text: str) -> int:
    return _whole_number(text, -admin_cli.MAX_CREDITS)


def run_access_command(args: argparse.Namespace) -> int | None:
    """Run ``pause``, ``resume``, ``users``, ``credits`` or ``payments``; None for any other command."""
    if args.command == "pause":
        return app.main(lambda: admin_cli.run_pause(args.config, args.reason, refund=args.refund))
    if args.command == "resume":
        return app.main(lambda: admin_cli.run_resume(args.config))
    if args.command == "users":
        return app.main(lambda: admin_cli.run_users(args.config, args.users_command, getattr(args, "user", None),
                                                    getattr(args, "reason", "")))
    if args.command == "credits":
        return app.main(lambda: admin_cli.run_credits(args.config, args.credits_command, args.user,
                                                      getattr(args, "amount", None)))
    if args.command == "payments":
        return app.main(lambda: admin_cli.run_payments(args.config, args.days, args.user, as_json=args.json))
    return None


def add_payments_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``payments list``: the payments ledger, for admins looking for a charge to refund."""
    payments = sub.add_parser("payments", help="list the payments users made (Telegram Stars, Discord)",
                              description="The payments ledger on the configured database: each purchase "
                                          "credited once, with its refund if any.")
    payments_sub = payments.add_subparsers(dest="payments_command", required=True)
    listing = payments_sub.add_parser(
        "list", help="one line per payment, newest first",
        description="One line per payment credited in the last --days days, newest first: when (UTC), "
                    "platform, user, pack, credits, its price (Stars, or the Discord SKU), its key "
                    "(telegram:<charge id> or discord:<entitlement id>: the id after the colon is what "
                    "/refund takes) and whether it was refunded, when and by whom, with the credits taken "
                    "back and those already spent (short).")
    listing.add_argument("--user", help="only this user's, as platform:id (e.g. telegram:123456)")
    listing.add_argument("--days", type=_days, default=30,
                         help="how far back, in days: 1 to 366 (default: 30); days start at "
                              "[quota] reset_hour_utc, today's counts as one")
    listing.add_argument("--json", action="store_true", help="print the payments as one JSON array")
    listing.add_argument("--config", type=Path, help="TOML settings (default: ./config.toml if present)")

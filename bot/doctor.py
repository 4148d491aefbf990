"""``kling-bot doctor``: checks that a deployment can work, each one plain line with its fix.

The config file and the paths in it, the database (reachable, writable, schema version),
the WaveSpeed key (its balance), each configured chat platform's token, the webhook URLs
(seen from this machine), and PyAV's encoders. Nothing is changed: no file is left behind,
the database is not migrated, no task is created. No secret is ever in a line: every
configured one is masked in each line, whatever an error message carried.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bot import messages
from bot.config import ConfigError, Settings
from bot.store.health import inspect_database
from bot.store.locations import is_postgres_url, shown
from bot.wavespeed import AuthError, WaveSpeedClient, WaveSpeedError

NETWORK_TIMEOUT = 10.0  # seconds for each remote check: a doctor that hangs helps no one
ENCODERS = ("libx264", "aac")  # what bot/videofit.py re-encodes with
GATEWAY_ERRORS = (502, 503, 504)  # a reverse proxy's answer when nothing listens behind it
# Discord asks every client for a User-Agent of this form (discord.com/developers/docs/reference#user-agent).
DISCORD_USER_AGENT = "DiscordBot (https://wavespeed.ai, 1.0) kling-bot-doctor"


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``name`` (the config key or subject), ``ok``, and ``line``, what
    was found and, when not ok, how to fix it."""

    name: str
    ok: bool
    line: str

    def __str__(self) -> str:
        return messages.doctor_line(self.name, self.ok, self.line)


async def diagnose(settings: Settings | ConfigError, *, from_file: bool, quick: bool = False) -> list[Check]:
    """Every check, in a fixed order, of the settings loaded (or the error loading them
    gave: then that is the one check). ``from_file``: they come from a config file (else
    only the defaults and the environment). ``quick``: only what this machine holds
    (config, paths, database, encoders), no call to WaveSpeed, a platform or a webhook URL."""
    if isinstance(settings, ConfigError):
        return [Check("config", False, messages.doctor_config_failed(str(settings)))]
    checks = [Check("config", True, messages.doctor_config_loaded(settings.source) if from_file
                    else messages.DOCTOR_NO_CONFIG)]
    checks += _path_checks(settings)
    checks.append(await _database(settings))
    if not quick:
        checks += await _network_checks(settings)
    checks.append(_encoders())
    return [Check(c.name, c.ok, masked(c.line, settings.secrets)) for c in checks]


def masked(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (longest first) replaced by ``[secret]``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "[secret]")
    return text


# --- this machine -----------------------------------------------------------------------------

def _path_checks(settings: Settings) -> list[Check]:
    checks = []
    database = settings.storage.database
    if not is_postgres_url(database):
        db_file = Path(database).absolute()
        key = "[storage] url" if settings.storage.url else "[storage] path"
        checks.append(_folder_check(key, db_file.parent, messages.DOCTOR_DATABASE_FOLDER))
        media = db_file.parent / f"{db_file.name}-media"  # where the SQLite store keeps job photos
        if media.exists():
            checks.append(_folder_check(key, media, messages.DOCTOR_MEDIA_FOLDER))
    checks.append(_folder_check("[storage] videos_dir", Path(settings.storage.videos_dir).absolute(),
                                messages.DOCTOR_VIDEO_FOLDER))
    return checks


def _folder_check(key: str, folder: Path, what: str) -> Check:
    why = unwritable_folder(folder)
    if why:
        return Check(key, False, messages.doctor_folder_bad(what, str(folder), why, key))
    return Check(key, True, messages.doctor_folder_ok(what, str(folder), folder.is_dir()))


def unwritable_folder(folder: Path) -> str | None:
    """Why files cannot be made in ``folder`` (or in the folder that would hold it, when it
    does not exist yet), or None: a file is made there and removed at once, which is the
    only test that also holds for a read-only disk or another user's folder."""
    place = folder
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        return messages.doctor_not_a_folder(str(place))
    try:
        with tempfile.TemporaryFile(dir=place, prefix=".kling-doctor-"):
            return None
    except OSError as err:
        return str(err.strerror or err)


async def _database(settings: Settings) -> Check:
    location = settings.storage.database
    where = shown(location) if is_postgres_url(location) else str(Path(location).absolute())
    name = "database"
    health = await inspect_database(location)
    if health.unreachable:
        return Check(name, False, messages.doctor_db_unreachable(where, health.unreachable))
    if health.unwritable:
        return Check(name, False, messages.doctor_db_unwritable(where, health.unwritable))
    if not health.exists:
        if unwritable_folder(Path(location).absolute().parent):  # the folder's own line says why
            return Check(name, False, messages.doctor_db_cannot_create(where))
        return Check(name, True, messages.doctor_db_new(where, health.newest))
    if health.version > health.newest:
        return Check(name, False, messages.doctor_db_too_new(where, health.version, health.newest))
    if health.busy:
        return Check(name, True, messages.doctor_db_busy(where, health.version, health.newest))
    return Check(name, True, messages.doctor_db_ok(where, health.version, health.newest))


def _encoders() -> Check:
    import av
    from av.codec import Codec

    missing = []
    for name in ENCODERS:
        try:
            Codec(name, "w")
        except Exception:  # PyAV raises UnknownCodecError (a ValueError) for one its FFmpeg lacks
            missing.append(name)
    if missing:
        return Check("PyAV", False, messages.doctor_encoders_missing(missing))
    ffmpeg = ".".join(str(part) for part in av.library_versions.get("libavcodec", ()))
    return Check("PyAV", True, messages.doctor_encoders_ok(ENCODERS, f"libavcodec {ffmpeg}"))


# --- over the network -------------------------------------------------------------------------

async def _network_checks(settings: Settings) -> list[Check]:
    """WaveSpeed, each configured platform, each webhook URL: all at once, in this order."""
    timeout = aiohttp.ClientTimeout(total=min(NETWORK_TIMEOUT, settings.wavespeed.request_timeout))
    async with aiohttp.ClientSession(timeout=timeout) as session:
        steps: list[Awaitable[Check]] = [_wavespeed(settings, session)]
        if settings.telegram.token:
            steps.append(_telegram(settings, session))
        if settings.discord.token:
            steps.append(_discord(settings, session))
        for key, url, listen in (("[wavespeed] webhook_url", settings.wavespeed.webhook_url,
                                  "[wavespeed] webhook_listen"),
                                 ("[telegram] webhook_url", settings.telegram.webhook_url,
                                  "[telegram] webhook_listen")):
            if url:
                steps.append(_webhook(key, url, listen, session))
        return list(await asyncio.gather(*steps))


def _described(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


async def _wavespeed(settings: Settings, session: aiohttp.ClientSession) -> Check:
    name, ws = "[wavespeed] api_key", settings.wavespeed
    if not ws.api_key:
        return Check(name, False, messages.DOCTOR_NO_API_KEY)
    # No retries: one answer says what the key is worth; a doctor does not wait out an outage.
    client = WaveSpeedClient(ws.base_url, ws.api_key, result_retries=0, session=session)
    try:
        usd = await client.balance()
    except AuthError as err:
        return Check(name, False, messages.doctor_bad_key(err.status))
    except WaveSpeedError as err:
        unreachable = err.status is None
        return Check(name, False, messages.doctor_unreachable("WaveSpeed", _host(ws.base_url), str(err),
                                                              "[wavespeed] base_url") if unreachable
                     else messages.doctor_refused("WaveSpeed", err.status or 0, str(err), messages.DOCTOR_TRY_LATER))
    if usd <= 0:
        return Check(name, False, messages.doctor_no_balance(_usd(usd)))
    return Check(name, True, messages.doctor_balance_ok(_usd(usd)))


def _usd(amount: Decimal) -> str:
    return f"{amount:.2f}"


async def _answer(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
                  ) -> tuple[int, Any]:
    """A GET's status and JSON body (None when it is not JSON)."""
    async with session.get(url, headers=headers, allow_redirects=False) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, None


def _field(body: Any, *keys: str) -> Any:
    for key in keys:
        body = body.get(key) if isinstance(body, dict) else None
    return body


async def _reached(service: str, base_url: str, key: str, name: str,
                   call: Callable[[], Awaitable[Check]]) -> Check:
    """``call``'s check, or the line saying the service cannot be reached at all."""
    try:
        return await call()
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        return Check(name, False, messages.doctor_unreachable(service, _host(base_url), _described(err), key))


async def _telegram(settings: Settings, session: aiohttp.ClientSession) -> Check:
    name, tg = "[telegram] token", settings.telegram

    async def get_me() -> Check:
        status, body = await _answer(session, tg.method_url("getMe"))
        if status == 200 and _field(body, "ok") is True:
            return Check(name, True, messages.doctor_telegram_ok(_field(body, "result", "username"),
                                                                 _field(body, "result", "id")))
        if status == 401:
            return Check(name, False, messages.DOCTOR_TELEGRAM_BAD_TOKEN)
        if status == 404:
            return Check(name, False, messages.DOCTOR_TELEGRAM_NOT_FOUND)
        detail = str(_field(body, "description") or "no description")[:200]
        return Check(name, False, messages.doctor_refused("Telegram", status, detail, messages.DOCTOR_TRY_LATER))

    return await _reached("Telegram", tg.base_url, "[telegram] base_url", name, get_me)


async def _discord(settings: Settings, session: aiohttp.ClientSession) -> Check:
    name, dc = "[discord] token", settings.discord
    headers = {"Authorization": f"Bot {dc.token}", "User-Agent": DISCORD_USER_AGENT}
    base = dc.api_base_url.rstrip("/")

    async def log_in() -> Check:
        status, user = await _answer(session, f"{base}/users/@me", headers)
        if status == 401:
            return Check(name, False, messages.DOCTOR_DISCORD_BAD_TOKEN)
        if status != 200:
            detail = str(_field(user, "message") or "no message")[:200]
            return Check(name, False, messages.doctor_refused("Discord", status, detail, messages.DOCTOR_TRY_LATER))
        status, app = await _answer(session, f"{base}/oauth2/applications/@me", headers)
        if status != 200:
            return Check(name, False, messages.DOCTOR_DISCORD_NO_APPLICATION)
        return Check(name, True, messages.doctor_discord_ok(_field(user, "username"), _field(user, "id"),
                                                            _field(app, "name"), _field(app, "id")))

    return await _reached("Discord", dc.api_base_url, "[discord] api_base_url", name, log_in)


async def _webhook(key: str, url: str, listen_key: str, session: aiohttp.ClientSession) -> Check:
    """Whether ``url`` answers at all from this machine: any HTTP answer but a proxy's
    gateway error (the bot's listener answers 404/405 to a bare GET; that is enough)."""
    try:
        async with session.get(url, allow_redirects=False) as resp:
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        return Check(key, False, messages.doctor_webhook_unreachable(url, _described(err), listen_key))
    if status in GATEWAY_ERRORS:
        return Check(key, False, messages.doctor_webhook_gateway(url, status, listen_key))
    return Check(key, True, messages.doctor_webhook_ok(url, status))

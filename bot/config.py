"""TOML settings as typed dataclasses; secrets may also come from the environment.

Every key has a default except secrets. A wrong key or value raises ConfigError
whose message is one line naming the key, meant to be printed as-is.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import regex

from bot import catalog
from bot.store.locations import is_postgres_url, passwords

# WaveSpeed's own hosts, from its public API docs: d2g64w682n9w0w.cloudfront.net serves the
# media/... files of the model pages' examples, d1q70pf5vjeyhc.cloudfront.net the predictions/...
# outputs of the docs' example results (neither checked against a live account), and wavespeed.ai
# itself. A video on any other host fails its job with an ERROR naming that host: add it to
# [wavespeed] download_hosts if it is WaveSpeed's.
DEFAULT_DOWNLOAD_HOSTS = ("*.wavespeed.ai", "d1q70pf5vjeyhc.cloudfront.net", "d2g64w682n9w0w.cloudfront.net")
# What setWebhook's secret_token may be (core.telegram.org/bots/api#setwebhook).
TELEGRAM_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


class ConfigError(Exception):
    """A setting is missing or wrong; str() is a one-line explanation."""


@dataclass(frozen=True)
class WaveSpeedSettings:
    api_key: str = field(default="", repr=False)
    base_url: str = "https://api.wavespeed.ai"
    max_concurrent: int = 2  # jobs at WaveSpeed at once (Bronze tier allows 2)
    job_timeout: float = 900.0  # seconds from submit until a job is failed and refunded
    poll_interval: float = 15.0  # longest gap between two result checks of a job
    media: Literal["upload", "data_uri"] = "upload"  # how images and audio reach the API
    request_timeout: float = 60.0  # seconds for one HTTP request
    history_settle: float = 20.0  # seconds WaveSpeed's history gets to show an unconfirmed task
    webhook_url: str = ""  # public base URL WaveSpeed reaches the bot at; empty: polling only
    # host:port of the bot's own webhook listener; empty: none in this process (another
    # process behind the same webhook_url receives, e.g. a front for its workers)
    webhook_listen: str = "127.0.0.1:8080"
    webhook_secret: str = field(default="", repr=False)  # empty: fetched from WaveSpeed at start
    # Hosts videos are downloaded from (https only; "*.example.com" matches its subdomains).
    # base_url's own origin (the same scheme, host and port) is always allowed too.
    download_hosts: list[str] = field(default_factory=lambda: list(DEFAULT_DOWNLOAD_HOSTS))
    # How long a job runs at WaveSpeed, when known in advance (the simulator's job time);
    # 0: learnt from the jobs before, else the catalog's guess.
    expected_run_seconds: float = 0.0


@dataclass(frozen=True)
class StorageSettings:
    path: str = "kling-bot.sqlite"  # the SQLite file, when no url is set
    # A postgresql:// URL (several machines share it) or a SQLite path; empty: ``path``.
    url: str = field(default="", repr=False)  # may carry a password
    videos_dir: str = "videos"  # finished MP4s, until delivered
    lease_seconds: float = 30.0  # a job whose process stops renewing is taken over after this
    keep_days: float = 7.0  # a delivered job's photo and settings, for its result buttons

    @property
    def database(self) -> str:
        """What the store opens: ``url`` when set, else the SQLite file ``path``."""
        return self.url or self.path

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite file the database is (None: a PostgreSQL URL)."""
        return None if is_postgres_url(self.database) else Path(self.database)


@dataclass(frozen=True)
class QuotaSettings:
    daily_credits: int = 10
    reset_hour_utc: int = 0
    max_jobs_per_user: int = 2  # a user's jobs queued or running at once
    # The value of one credit: a quoted price is rounded up to whole credits. $0.25 keeps
    # the seed models' old prices (v2.1 standard $0.25 per 5 s = 1 credit, master $1 = 4).
    credit_usd: Decimal = catalog.DEFAULT_CREDIT_USD


@dataclass(frozen=True)
class ModelsSettings:
    """Which models are offered ([models]); the live listing decides which exist."""

    enabled: list[str] | None = None  # ids or glob patterns; None: the seeds + the newest of each tier
    default: str = catalog.DEFAULT_ANIMATE_MODEL  # what /animate uses without a model
    names: dict[str, str] = field(default_factory=dict)  # short name -> model id
    refresh_hours: float = 24.0  # how often GET /api/v3/models is read again

    @property
    def choice(self) -> catalog.ModelChoice:
        return catalog.ModelChoice(tuple(self.enabled) if self.enabled is not None else None,
                                   self.default, dict(self.names))


@dataclass(frozen=True)
class MediaSettings:
    max_download_mb: float = 20.0  # largest photo or audio file the bot accepts
    # 30 s of avatar audio costs 6 credits by default: within a day's 10 (60 s would not be).
    max_audio_seconds: float = 30.0

    @property
    def max_download_bytes(self) -> int:
        """``max_download_mb`` in bytes: the most of a user's file the bot reads."""
        return int(self.max_download_mb * 1024 * 1024)


@dataclass(frozen=True)
class TelegramSettings:
    token: str = field(default="", repr=False)
    # A self-hosted Bot API server (or the tests' fake one) goes here.
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    admins: list[int] = field(default_factory=list)  # Telegram user ids
    allowed_chats: list[int] = field(default_factory=list)  # empty: every chat
    upload_limit_mb: float = 50.0  # bots may send up to 50 MB (more on a local server)
    nsfw: Literal["spoiler", "block"] = "spoiler"
    progress_interval: float = 3.0  # seconds between two edits of a progress message
    # Webhook mode: Telegram POSTs updates to webhook_url (any number of fronts may stand
    # behind it); empty: the bot polls getUpdates, one poller per bot token.
    webhook_url: str = ""
    webhook_listen: str = "127.0.0.1:8443"  # host:port of this front's own update listener
    secret_token: str = field(default="", repr=False)  # sent back by Telegram in every delivery
    # Seconds a polling bot listens at start for another program polling the same token
    # (Telegram then answers one of them 409 Conflict); 0 skips the check.
    conflict_check_seconds: float = 2.0
    chats: dict[str, int] = field(default_factory=dict)  # chat id -> daily credits of its members

    def method_url(self, method: str) -> str:
        """A Bot API method's URL as python-telegram-bot builds it: the token where base_url
        says ``{token}`` (Telegram's test environment: ``.../bot{token}/test``), else after it."""
        base = self.base_url.replace("{token}", self.token) if "{token}" in self.base_url \
            else self.base_url + self.token
        return f"{base}/{method}"


@dataclass(frozen=True)
class DiscordSettings:
    token: str = field(default="", repr=False)
    guild_ids: list[int] = field(default_factory=list)  # sync commands here at once; empty: global
    admins: list[int] = field(default_factory=list)  # user ids, besides Manage Server holders
    allowed_channels: list[int] = field(default_factory=list)  # empty: every channel
    api_base_url: str = "https://discord.com/api/v10"  # or a REST proxy such as nirn-proxy
    gateway_url: str = ""  # empty: Discord's own gateway (tests point it at a fake one)
    nsfw: Literal["spoiler", "block", "nsfw_channels_only"] = "spoiler"
    progress_interval: float = 2.0  # seconds between two edits of a progress message
    # Sharding: this process runs shards shard_ids (empty: all) of shard_count; 0: not sharded.
    shard_count: int = 0
    shard_ids: list[int] = field(default_factory=list)
    admin_channel: int = 0  # channel id the 80%/100% spend alerts go to; 0: none
    roles: dict[str, int] = field(default_factory=dict)  # role id -> daily credits (the highest applies)


@dataclass(frozen=True)
class SpendSettings:
    """Caps on what the whole bot spends at WaveSpeed ([spend]); None: no cap."""

    daily_usd: Decimal | None = None  # the whole bot, per day (from [quota] reset_hour_utc)
    daily_usd_per_place: Decimal | None = None  # each Discord server / Telegram chat, per day
    monthly_usd: Decimal | None = None  # the whole bot, per calendar month (UTC)


@dataclass(frozen=True)
class ModerationSettings:
    """Prompt rules ([moderation]), checked before any cost."""

    blocked_words: list[str] = field(default_factory=list)  # whole words, any case
    blocked_patterns: list[str] = field(default_factory=list)  # Python regular expressions, any case


@dataclass(frozen=True)
class HttpSettings:
    """The optional operations listener ([http]): /healthz, /readyz, /metrics."""

    listen: str = ""  # host:port; empty: none


@dataclass(frozen=True)
class Pack:
    """A pack of credits users can buy ([[payments.packs]])."""

    name: str  # shown on /buy and on the invoice; unique
    credits: int  # credits a purchase adds (purchased credits never expire)
    stars: int = 0  # price in Telegram Stars (XTR); 0: not sold on Telegram
    discord_sku: str = ""  # the consumable SKU's id in Discord's Developer Portal; "": not sold on Discord


@dataclass(frozen=True)
class PaymentsSettings:
    """Credits for sale ([payments]): Telegram Stars and Discord's premium apps."""

    packs: list[Pack] = field(default_factory=list)  # empty: nothing for sale
    support: str = ""  # what /paysupport answers: how a buyer reaches you about a payment

    def sold_on(self, platform: str) -> list[Pack]:
        """The packs a platform's users can buy there (Telegram: a Stars price; Discord: an SKU)."""
        return [pack for pack in self.packs
                if (platform == "telegram" and pack.stars) or (platform == "discord" and pack.discord_sku)]


@dataclass(frozen=True)
class LogSettings:
    format: Literal["text", "json"] = "text"  # json: one object per line, with the job id on job lines


@dataclass(frozen=True)
class Settings:
    wavespeed: WaveSpeedSettings = WaveSpeedSettings()
    storage: StorageSettings = StorageSettings()
    quota: QuotaSettings = QuotaSettings()
    media: MediaSettings = MediaSettings()
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    models: ModelsSettings = ModelsSettings()
    spend: SpendSettings = SpendSettings()
    moderation: ModerationSettings = ModerationSettings()
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    payments: PaymentsSettings = PaymentsSettings()
    costs: dict[str, Any] = field(default_factory=dict)  # credits per model that override its quote
    source: str = "built-in defaults"

    @property
    def secrets(self) -> list[str]:
        """Every configured secret, for log redaction."""
        database = passwords(self.storage.url)  # a postgresql:// URL's password
        return [v for v in (self.wavespeed.api_key, self.wavespeed.webhook_secret, self.telegram.token,
                            self.telegram.secret_token, self.discord.token, *database) if v]

    def with_wavespeed(self, **changes: Any) -> Settings:
        return replace(self, wavespeed=replace(self.wavespeed, **changes))


_SECTIONS = {"wavespeed": WaveSpeedSettings, "storage": StorageSettings,
             "quota": QuotaSettings, "media": MediaSettings, "telegram": TelegramSettings,
             "discord": DiscordSettings, "models": ModelsSettings, "spend": SpendSettings,
             "moderation": ModerationSettings, "http": HttpSettings, "log": LogSettings,
             "payments": PaymentsSettings}
# Environment variables that override a secret in the file.
_ENV_SECRETS = {("wavespeed", "api_key"): "WAVESPEED_API_KEY",
                ("wavespeed", "webhook_secret"): "WAVESPEED_WEBHOOK_SECRET",
                ("telegram", "token"): "TELEGRAM_BOT_TOKEN",
                ("telegram", "secret_token"): "KLING_TELEGRAM_SECRET_TOKEN",
                ("discord", "token"): "DISCORD_BOT_TOKEN",
                ("storage", "url"): "KLING_DATABASE_URL"}  # may carry a password


def load_settings(path: str | os.PathLike[str] | None = None,
                  env: typing.Mapping[str, str] | None = None) -> Settings:
    """Read a TOML file (or none: defaults) and the environment into Settings."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    if path is not None:
        file = Path(path)
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Config file {file} not found (copy config.example.toml).") from None
        except IsADirectoryError:
            raise ConfigError(f"{file} is a folder, not a config file (copy config.example.toml).") from None
        except UnicodeDecodeError as err:
            raise ConfigError(f"{file}: not a UTF-8 text file (byte {err.start}); save it as UTF-8.") from None
        except OSError as err:
            raise ConfigError(f"Config file {file} cannot be read: {err.strerror or err}.") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{file}: not valid TOML: {err}") from None
        source = str(file)
    if path is not None:
        raw = _paths_beside(raw, Path(path).parent)
    unknown = set(raw) - set(_SECTIONS) - {"costs"}
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(f"{source}: unknown section [{name}]{_did_you_mean(name, [*_SECTIONS, 'costs'])}")
    sections = {name: _section(cls, name, raw.get(name, {}), source, env)
                for name, cls in _SECTIONS.items()}
    costs = _costs(raw.get("costs", {}), source)
    settings = Settings(**sections, costs=costs, source=source)
    _check_ranges(settings, source)
    return settings


# [storage] keys naming a file or folder: a relative one is read against the config
# file's own folder, so the bot finds its database whatever folder it is started in.
_PATH_KEYS = ("path", "url", "videos_dir")


def _paths_beside(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``raw`` with the relative [storage] paths it names made absolute, from ``folder``
    (a URL, SQLite's ``:memory:`` and values of the wrong type stay as they are: the key's
    own check says what is wrong with those)."""
    storage = raw.get("storage")
    if not isinstance(storage, dict):
        return raw
    resolved = dict(storage)
    for key in _PATH_KEYS:
        value = storage.get(key)
        if isinstance(value, str) and value and value != ":memory:" and "://" not in value:
            resolved[key] = str(folder.absolute() / Path(value).expanduser())
    return {**raw, "storage": resolved}


def _section(cls: type, name: str, values: Any, source: str,
             env: typing.Mapping[str, str]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{name}] must be a table of keys.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{source}: unknown key [{name}] {key}{_did_you_mean(key, known)}")
    kwargs = {key: _coerce(f"[{name}] {key}", hints[key], value, source)
              for key, value in values.items()}
    for (section, key), var in _ENV_SECRETS.items():
        if section == name and env.get(var):
            kwargs[key] = env[var].strip()
    return cls(**kwargs)


def _coerce(label: str, hint: Any, value: Any, source: str) -> Any:
    # A secret's value is never echoed: the error may end up in a log or a bug report.
    got = "" if label in {f"[{s}] {k}" for s, k in _ENV_SECRETS} else f" (got {value!r})"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
        (inner,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
        return _coerce(label, inner, value, source)
    if hint is Decimal and isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ConfigError(f"{source}: {label} must be a number, e.g. \"0.25\"{got}.") from None
        if not number.is_finite() or number <= 0:
            raise ConfigError(f"{source}: {label} must be more than 0{got}.")
        return number
    if origin is dict and isinstance(value, dict):
        key_hint, value_hint = typing.get_args(hint)
        return {_coerce(label, key_hint, k, source): _coerce(f"{label}.{k}", value_hint, v, source)
                for k, v in value.items()}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type) and isinstance(value, dict):
        known = {f.name: f for f in fields(hint)}
        for key in value:
            if key not in known:
                raise ConfigError(f"{source}: {label}: unknown key {key}{_did_you_mean(key, known)}")
        hints = typing.get_type_hints(hint)
        missing = [f.name for f in known.values()
                   if f.name not in value and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ConfigError(f"{source}: {label} has no {' and no '.join(missing)}{got}.")
        return hint(**{key: _coerce(f"{label}: {key}", hints[key], item, source) for key, item in value.items()})
    if origin is Literal:
        if value not in typing.get_args(hint):
            allowed = " or ".join(repr(a) for a in typing.get_args(hint))
            raise ConfigError(f"{source}: {label} must be {allowed}{got}.")
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint)
        if dataclasses.is_dataclass(item):  # an array of tables: each said by its name, or its place
            return [_coerce(_table_label(label, n, v), item, v, source) for n, v in enumerate(value, start=1)]
        return [_coerce(label, item, v, source) for v in value]
    kind = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
            Decimal: "a number", Pack: "a table: name, credits, stars, discord_sku"}
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        wanted = "a string, in quotes"  # an id written as a number: "1234567890123456789"
    elif origin is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
        wanted = f"a list of tables, each under its own {_table_label(label)} line"
    else:
        wanted = kind.get(hint, f"a list of {typing.get_args(hint)[0].__name__}" if origin is list
                          else "a table of names" if origin is dict else str(hint))
    raise ConfigError(f"{source}: {label} must be {wanted}{got}.")


def _table_label(label: str, number: int | None = None, value: Any = None) -> str:
    """``[payments] packs`` as TOML writes an item of it, ``[[payments.packs]]``, then the
    item's name (``'Starter'``) or, with none, its place (``number 2``)."""
    array = f"[[{label.strip('[').replace('] ', '.')}]]"
    if number is None:
        return array
    name = value.get("name") if isinstance(value, dict) else None
    return f"{array} {name!r}" if isinstance(name, str) and name.strip() else f"{array} number {number}"


def _costs(values: Any, source: str) -> dict[str, Any]:
    """Credits per model (short name or id) that override its quote; a name the catalog
    does not know is said at start, once the live listing is read."""
    costs: dict[str, Any] = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [costs] must be a table of model = credits.")
    for key, value in values.items():
        if isinstance(value, dict):
            table = {}
            for seconds, credits in value.items():
                if not str(seconds).isdigit() or not _is_count(credits):
                    raise ConfigError(f"{source}: [costs] {key} must map seconds to whole "
                                      f"credits, e.g. {{ 5 = 1, 10 = 2 }} (got {value!r}).")
                table[int(seconds)] = credits
            costs[key] = table
        elif _is_count(value):
            costs[key] = value
        else:
            raise ConfigError(f"{source}: [costs] {key} must be a whole number of credits "
                              f"per 5 seconds, or a table {{ 5 = 1, 10 = 2 }} (got {value!r}).")
    return costs


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_ranges(s: Settings, source: str) -> None:
    rules = [
        (s.wavespeed.max_concurrent >= 1, "[wavespeed] max_concurrent must be at least 1"),
        (s.models.refresh_hours > 0, "[models] refresh_hours must be above 0"),
        (bool(s.models.default.strip()), "[models] default must name a model, e.g. \"v2.1\""),
        (s.wavespeed.poll_interval > 0, "[wavespeed] poll_interval must be above 0 seconds"),
        (s.wavespeed.job_timeout > 0, "[wavespeed] job_timeout must be above 0 seconds"),
        (s.wavespeed.request_timeout > 0, "[wavespeed] request_timeout must be above 0 seconds"),
        (s.wavespeed.history_settle >= 0, "[wavespeed] history_settle cannot be negative"),
        (_webhook_url_ok(s.wavespeed.webhook_url),
         "[wavespeed] webhook_url must be an https:// URL (http:// only for localhost or a loopback address)"),
        (s.wavespeed.webhook_listen == "" or _host_port_ok(s.wavespeed.webhook_listen),
         "[wavespeed] webhook_listen must be host:port (or empty: no listener in this process)"),
        ("://" not in s.storage.url or is_postgres_url(s.storage.url),
         "[storage] url must be a postgresql:// URL or a SQLite file path"),
        (all(_host_pattern_ok(host) for host in s.wavespeed.download_hosts),
         "[wavespeed] download_hosts must list host names such as \"cdn.example.com\" or \"*.example.com\""),
        (s.storage.lease_seconds > 0, "[storage] lease_seconds must be above 0 seconds"),
        (s.storage.keep_days >= 0, "[storage] keep_days cannot be negative"),
        (s.wavespeed.expected_run_seconds >= 0, "[wavespeed] expected_run_seconds cannot be negative"),
        (s.wavespeed.base_url.startswith(("http://", "https://")),
         "[wavespeed] base_url must start with http:// or https://"),
        (s.quota.daily_credits >= 0, "[quota] daily_credits cannot be negative"),
        (0 <= s.quota.reset_hour_utc <= 23, "[quota] reset_hour_utc must be 0 to 23"),
        (s.quota.max_jobs_per_user >= 1, "[quota] max_jobs_per_user must be at least 1"),
        (s.media.max_download_mb > 0, "[media] max_download_mb must be above 0"),
        (s.media.max_audio_seconds > 0, "[media] max_audio_seconds must be above 0"),
        (s.telegram.upload_limit_mb > 0, "[telegram] upload_limit_mb must be above 0"),
        (s.telegram.progress_interval >= 0, "[telegram] progress_interval cannot be negative"),
        (s.telegram.conflict_check_seconds >= 0, "[telegram] conflict_check_seconds cannot be negative"),
        (_webhook_url_ok(s.telegram.webhook_url),
         "[telegram] webhook_url must be an https:// URL (http:// only for localhost or a loopback address)"),
        (_host_port_ok(s.telegram.webhook_listen), "[telegram] webhook_listen must be host:port"),
        (not s.telegram.webhook_url or bool(s.telegram.secret_token),
         "[telegram] webhook_url needs a secret_token (or KLING_TELEGRAM_SECRET_TOKEN): 1-256 characters "
         "of A-Z, a-z, 0-9, _ and -, which Telegram sends with every update so the bot can tell them from forgeries"),
        (not s.telegram.secret_token or TELEGRAM_SECRET_TOKEN.fullmatch(s.telegram.secret_token) is not None,
         "[telegram] secret_token must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram allows no others)"),
        (s.discord.progress_interval >= 0, "[discord] progress_interval cannot be negative"),
        (s.discord.api_base_url.startswith(("http://", "https://")),
         "[discord] api_base_url must start with http:// or https://"),
        (not s.discord.gateway_url or s.discord.gateway_url.startswith(("ws://", "wss://")),
         "[discord] gateway_url must start with ws:// or wss://"),
        (s.discord.shard_count >= 0, "[discord] shard_count cannot be negative"),
        (s.discord.shard_count or not s.discord.shard_ids,
         "[discord] shard_ids needs [discord] shard_count, the number of shards they are part of"),
        (all(0 <= shard < s.discord.shard_count for shard in s.discord.shard_ids),
         f"[discord] shard_ids must be 0 to {s.discord.shard_count - 1} with shard_count = {s.discord.shard_count}"
         f" (got {s.discord.shard_ids})"),
        (len(set(s.discord.shard_ids)) == len(s.discord.shard_ids), "[discord] shard_ids lists a shard twice"),
        (s.http.listen == "" or _host_port_ok(s.http.listen), "[http] listen must be host:port (or empty: none)"),
        (all(key.isdigit() and credits >= 0 for key, credits in s.discord.roles.items()),
         "[discord.roles] must map role ids to daily credits, e.g. \"123456789012345678\" = 30"),
        (all(key.lstrip("-").isdigit() and credits >= 0 for key, credits in s.telegram.chats.items()),
         "[telegram.chats] must map chat ids to daily credits, e.g. \"-1001234567890\" = 20"),
        *((cap is None or cap > 0, f"[spend] {name} must be above 0 dollars (leave it out for no cap)")
          for name, cap in (("daily_usd", s.spend.daily_usd), ("daily_usd_per_place", s.spend.daily_usd_per_place),
                            ("monthly_usd", s.spend.monthly_usd))),
        *_pack_rules(s.payments.packs),
        (all(word.strip() for word in s.moderation.blocked_words), "[moderation] blocked_words lists an empty word"),
        *((_pattern_problem(pattern) is None,
           f"[moderation] blocked_patterns: {pattern!r} is not a valid regular expression"
           f" ({_pattern_problem(pattern)})")
          for pattern in s.moderation.blocked_patterns),
    ]
    for ok, message in rules:
        if not ok:
            raise ConfigError(f"{source}: {message}.")


MAX_PACK_NAME = 32  # an invoice's title: "1-32 characters" (Telegram counts UTF-16 code units)
MAX_PACK_CREDITS = 1_000_000
MAX_PACK_STARS = 100_000  # Telegram refuses an invoice above its own limit; this only stops typos


MAX_DISCORD_PACKS = 25  # Discord: five action rows of five buttons on a message


def _pack_rules(packs: list[Pack]) -> list[tuple[bool, str]]:
    rules: list[tuple[bool, str]] = [
        (len([pack for pack in packs if pack.discord_sku]) <= MAX_DISCORD_PACKS,
         f"[[payments.packs]]: at most {MAX_DISCORD_PACKS} packs with a discord_sku (a message holds"
         f" {MAX_DISCORD_PACKS} premium buttons, five rows of five)")]
    names: dict[str, str] = {}  # a name as compared (case and edge spaces aside) -> the first pack's
    skus: dict[str, str] = {}  # an SKU -> the first pack's name
    for pack in packs:
        label = f"[[payments.packs]] {pack.name!r}"
        name = pack.name.strip().casefold()
        rules += [
            # as Telegram counts an invoice's title: in UTF-16 code units
            (bool(pack.name.strip()) and len(pack.name.encode("utf-16-le", "surrogatepass")) // 2 <= MAX_PACK_NAME,
             f"{label}: name must be 1-{MAX_PACK_NAME} characters (an emoji counts as 2)"),
            (name not in names, f"{label}: pack {names.get(name)!r} has that name too; each pack needs its own"),
            (1 <= pack.credits <= MAX_PACK_CREDITS, f"{label}: credits must be 1 to {MAX_PACK_CREDITS:,}"),
            (0 <= pack.stars <= MAX_PACK_STARS, f"{label}: stars must be 0 (not on Telegram) to {MAX_PACK_STARS:,}"),
            (pack.discord_sku == "" or (pack.discord_sku.isascii() and pack.discord_sku.isdigit()),
             f"{label}: discord_sku must be the SKU's numeric id from the Developer Portal (or \"\": not on Discord)"),
            # Discord's purchase names only its SKU: two packs on one SKU could not be told apart.
            (pack.discord_sku not in skus, f"{label}: pack {skus.get(pack.discord_sku)!r} has discord_sku"
                                           f" {pack.discord_sku} too; each pack needs its own SKU"),
            (bool(pack.stars or pack.discord_sku), f"{label} needs a stars price, a discord_sku, or both"),
        ]
        names.setdefault(name, pack.name)
        if pack.discord_sku:
            skus.setdefault(pack.discord_sku, pack.name)
    return rules


def _webhook_url_ok(url: str) -> bool:
    if not url:
        return True
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    # Plain http only where no one else can listen in: tests and a local reverse proxy.
    return parts.scheme == "http" and is_local_host(parts.hostname or "")


def is_local_host(host: str) -> bool:
    """Whether a host name is this computer only: ``localhost`` or a loopback address
    (127.0.0.0/8, ``::1``; IPv6 in brackets or not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def _pattern_problem(pattern: str) -> str | None:
    """Why a [moderation] pattern does not compile, or None when it does."""
    try:  # compiled as bot.spend.PromptRules runs it
        regex.compile(pattern, regex.IGNORECASE | regex.V0)
    except regex.error as err:
        return str(err)
    return None if pattern else "it is empty: it would match every prompt"


def _host_port_ok(listen: str) -> bool:
    host, _, port = listen.rpartition(":")
    return bool(host) and port.isascii() and port.isdigit() and 0 <= int(port) <= 65535


def _host_pattern_ok(pattern: str) -> bool:
    """A host name, or ``*.`` and a domain: no scheme, port or path."""
    return re.fullmatch(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", pattern) is not None


def _did_you_mean(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


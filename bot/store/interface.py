"""The store's one async interface, which every backend implements and the engine awaits.

The engine, the credit policy and the scheduler see only these protocols; the SQL lives
in one module per backend (``bot.store.sqlite``, ``bot.store.postgres``). Semantics that
every backend keeps, because the money rules rest on them:

- ``transaction()`` is one atomic unit of work; nested use joins the outer one. Inside
  it, ``job(id)`` and ``user(key)`` read rows that no other transaction can change
  until it ends (SQLite: the write lock, taken up front; PostgreSQL: ``FOR NO KEY UPDATE``),
  and ``lock_user(key)`` serialises every transaction about one key (a user's, or a
  named lease's), row or no row.
  A transaction's body awaits nothing but this store.
- ``update_job(..., owner=...)`` writes only while that process holds the job's lease,
  else raises ``LeaseLost``; a task id another job already has raises ``TaskTaken``.
- ``insert_reserved_job`` writes a job with its user's row, its ledger row and its media
  at once, all or nothing (PostgreSQL: one statement); ``commit_job`` ends a job and
  commits its reservation at once, fenced by the owner as ``update_job`` is (PostgreSQL:
  one statement, atomic without a transaction). What to reserve and what the ledger
  says is the credit policy's (``bot.credits``): these only write it.
- A user row's ``version`` moves on with every write to the row, whatever writes it (a
  trigger). ``reserve_if_unchanged`` is ``insert_reserved_job`` for a row read earlier:
  it writes only if the row's version is still the one read and the user has fewer
  active jobs than a limit, else nothing (PostgreSQL: one statement, without a
  transaction, taking the user's ``lock_user`` lock for its duration).
- ``settle`` moves a reservation out of ``reserved`` once; ``record_result`` keeps the
  first task reported for a job; ``PendingAsks.claim`` is true for one caller only.
- ``Claims.claim_next`` hands a queued job to exactly one process: its own, or (``adopt``)
  one that no live process holds; ``take_over`` hands over started jobs of a dead one;
  ``mark_places`` gives each lower place in line of a job to one caller only.
- ``export_batches`` and ``import_batch`` move every row of a table between backends in
  one neutral form (``COPIED_TABLES``), ids kept, media as bytes, JSON columns as Python
  values, money as ``Decimal``; what the bot stores beyond that form (a SQLite media
  file's path) is each backend's own business.
- ``save_model_listing`` keeps the newest listing: one statement, so processes that
  refresh it independently never put an older one back over a newer one.
- ``insert_payment`` writes a charge's row once by its key, however many processes try
  at once (one wins; the rest write nothing and are told so); ``mark_refunded`` moves a
  payment to refunded once. The credit policy calls them inside one transaction with the
  user's row and the ledger row, under ``lock_user``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.jobs import Job, JobState

if TYPE_CHECKING:
    from bot.store.activity import Activity

ASK_LIFETIME = 24 * 3600  # seconds an unanswered question in a chat is kept
STAGED_LIFETIME = 3600  # seconds a staged media file may wait for its job row
MAX_JOB_ID = 2**63 - 1  # a number typed by a user above this names no job
QUEUE_PLACES = "queue-place"  # the ``platform`` under which pending asks keep each job's last announced place

# What a copy between stores moves, in an order that writes a row after the rows it refers
# to (jobs name users; media name jobs), with each table's key (batches follow it).
COPIED_TABLES: dict[str, tuple[str, ...]] = {
    "users": ("key",), "jobs": ("id",), "ledger": ("id",),
    "job_media": ("job_id", "role"), "pending_asks": ("platform", "chat", "message_id"),
    "model_listing": ("source",), "bans": ("user_key",), "bot_state": ("key",), "alerts_sent": ("key",),
    "payments": ("key",),
}
JSON_COLUMNS = {"jobs": ("reply_to", "inputs", "webhook_result"), "pending_asks": ("data",),
                "model_listing": ("listing",), "bot_state": ("value",),
                "payments": ("details",)}
DECIMAL_COLUMNS = {"jobs": ("quote_usd", "charged_usd")}  # exact money: a Decimal in the neutral form, never a float
# What a job counts to the spend (``Store.spend_usd``), in SQL both backends speak: what
# WaveSpeed charged once known; nothing for a refunded job whose task never completed
# (none was created, or it failed: WaveSpeed bills neither); else its quote, and for a job
# without one (NULL here) its credits at ``[quota] credit_usd`` (UNQUOTED_CREDITS_OF_JOB).
_NOT_BILLED = "(coalesce(settlement, '') = 'refunded' and completed_at is null)"
SPEND_OF_JOB = f"coalesce(charged_usd, case when {_NOT_BILLED} then 0 else quote_usd end)"
UNQUOTED_CREDITS_OF_JOB = (f"case when charged_usd is null and quote_usd is null and not {_NOT_BILLED}"
                           " then cost else 0 end")
# Tables that only cache what the bot can fetch again: a copy's target holding nothing
# else counts as empty (a bot started on it once already saved the model listing).
CACHE_TABLES = ("model_listing",)
LISTING_SOURCE = "wavespeed"  # the ``model_listing`` row of WaveSpeed's GET /api/v3/models
MEDIA_BYTES = "media_bytes"  # the key of ``Store.contents`` that counts media bytes, not rows
EXPORT_ROWS = 500  # rows in one exported batch, at most
EXPORT_BYTES = 8 * 1024 * 1024  # media bytes in one batch, at most (or one larger file alone)


_SURROGATE = re.compile("[\ud800-\udfff]")


def mended(text: str) -> str:
    """Text with each lone UTF-16 surrogate (text cut in the middle of an emoji, as a chat
    may deliver it) as U+FFFD: it has no UTF-8 spelling, so no database can store it."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def exact(value: object) -> Decimal | None:
    """Money as a column gave it back (SQLite: text; PostgreSQL: numeric) as an exact
    ``Decimal``; None stays None."""
    if value is None or isinstance(value, Decimal):
        return value
    return Decimal(str(value))


class LeaseLost(Exception):
    """The job is no longer this process's: another one took it over."""


class StoreOffline(Exception):
    """The database could not be reached for this call: the connection was refused, cut
    (a server restarting) or went silent. Nothing is known of what the call wrote (a cut
    COMMIT may have happened): the caller tries again later, with writes that are safe to
    repeat. Only a store on the network raises it; SQLite never does."""


class TaskTaken(Exception):
    """Another job already follows this WaveSpeed task."""


class MediaMissing(Exception):
    """A job's media file named by its row cannot be read (a copy cannot move it)."""

    def __init__(self, job_id: int, role: str, path: str, reason: str):
        super().__init__(job_id, role, path, reason)
        self.job_id, self.role, self.path, self.reason = job_id, role, path, reason


@dataclass(frozen=True)
class Staged:
    """A photo or audio written before its job exists (``MediaFiles.stage``): a file
    beside a SQLite database, or the bytes themselves for a backend that keeps media in
    its rows."""

    filename: str
    path: Path | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class MediaItem:
    """A photo or audio to keep with a new job (``insert_reserved_job``), as ``MediaFiles.put`` takes it."""

    role: str
    mime: str
    filename: str
    data: bytes | Staged


@dataclass(frozen=True)
class ReservedJob:
    """A job as ``insert_reserved_job`` or ``reserve_if_unchanged`` wrote it, with its
    user's row version after that write and its place in the queue (``queue_position``)."""

    job: Job
    user_version: int
    queue_position: int


@dataclass(frozen=True)
class MetricTotals:
    """The database's figures for ``/metrics`` (``Store.metric_totals``), the same in every
    process sharing the database. Spend follows the caps' rule (``SPEND_OF_JOB``)."""

    jobs: dict[tuple[str, str], int]  # (model id, state) -> jobs
    queue_depth: int  # jobs queued now
    spend_usd: dict[str, Decimal]  # model id -> USD
    failures: dict[str, int]  # failure kind -> jobs that ended with it
    credits_spent: int  # credits of reservations committed (videos delivered)
    credits_reserved: int  # credits held by jobs not yet settled
    credits_refunded: int  # credits of reservations refunded
    credits_granted: int  # credits admins added (``grant`` and ``set`` movements upwards)
    # payments (#18), by platform ("telegram", "discord") -> how many
    payments: dict[str, int] = field(default_factory=dict)  # purchases credited
    payment_refunds: dict[str, int] = field(default_factory=dict)  # of them, refunded
    credits_purchased: int = 0
    credits_taken_back: int = 0  # purchased credits refunds removed
    stars_received: int = 0  # Telegram Stars of the purchases


class OpsReads(Protocol):
    """What the operations listener (``bot.ops_http``) reads of a store."""

    async def metric_totals(self, *, credit_usd: Decimal = ...) -> MetricTotals:
        """Every figure of ``MetricTotals`` in one read of the database (spend as
        ``SPEND_OF_JOB`` counts it, an unquoted job's credits at ``credit_usd``)."""
    async def check_alive(self) -> None:
        """Raise when the database does not answer a trivial query (SQLite: also when
        its file is no longer at its path, so writes would be lost)."""


class PendingAsks(Protocol):
    """Questions a chat asked a user, and one-use marks (menus, update ids)."""

    async def put(self, platform: str, chat: object, message_id: object, data: dict[str, Any],
                  now: float) -> None: ...
    async def get(self, platform: str, chat: object, message_id: object) -> dict[str, Any] | None: ...
    async def claim(self, platform: str, chat: object, message_id: object, now: float,
                    window: float | None = None) -> bool: ...
    async def unclaim(self, platform: str, chat: object, message_id: object) -> None: ...
    async def forget_before(self, moment: float) -> None: ...
    async def drop(self, platform: str, chat: object, message_id: object) -> None: ...


class MediaFiles(Protocol):
    """A job's photo and audio, readable by every process sharing the store."""

    async def stage(self, data: bytes, filename: str) -> Staged: ...
    async def discard(self, staged: Staged) -> None: ...
    async def put(self, job_id: int, role: str, mime: str, filename: str, data: bytes | Staged) -> None: ...
    async def get(self, job_id: int) -> dict[str, dict[str, Any]]: ...
    async def has(self, job_id: int, role: str = "image") -> bool: ...
    async def sweep(self) -> int: ...
    async def expire(self, finished_before: float) -> list[int]: ...
    async def drop(self, job_id: int) -> None: ...


class Claims(Protocol):
    """Which process drives which job: leases renewed by their owner, taken over when
    they run out."""

    async def claim_next(self, owner: str, platforms: list[str], lease_until: float, now: float,
                         exclude: set[int], *, adopt: bool = False, user_key: str | None = None) -> Job | None: ...
    async def take_over(self, owner: str, platforms: list[str], lease_until: float,
                        now: float, *, user_key: str | None = None) -> list[Job]: ...
    async def renew(self, owner: str, lease_until: float, *, after: int = 0,
                    limit: int | None = None) -> dict[int, JobState]: ...
    async def release(self, owner: str) -> None: ...
    async def release_job(self, job_id: int, owner: str) -> None: ...
    async def live_owner(self, job_id: int, now: float) -> str | None: ...
    async def held(self, owner: str) -> list[Job]: ...
    async def own_queued(self, owner: str, *, after: int = 0, limit: int | None = None) -> list[Job]: ...
    async def waiting_places(self, owner: str, platforms: list[str], now: float, *, after: int = 0,
                             limit: int | None = None) -> list[tuple[Job, int]]:
        """Queued jobs of these platforms that no live process holds (``owner``'s own aside:
        ``own_queued`` has them), numbered above
        ``after``, first come first (the first ``limit``), each with its place among all
        queued jobs (as ``queue_position`` counts)."""
    async def mark_places(self, places: dict[int, int], now: float) -> set[int]:
        """Record each job's place in line (job id -> place) where it is lower than any
        recorded for it before; the jobs so marked. One caller only marks a given place,
        however many processes try at once."""
    async def next_due(self, owner: str, platforms: list[str], now: float, *, adopt: bool = False,
                       user_key: str | None = None) -> float | None: ...


class Store(OpsReads, Protocol):
    """Users, the credit ledger, jobs, their media and the questions chats asked."""

    @property
    def asks(self) -> PendingAsks: ...
    @property
    def claims(self) -> Claims: ...
    @property
    def files(self) -> MediaFiles: ...

    # Whether ``on_change`` hears of other processes' changes too (else only this one's).
    hears_other_processes: bool

    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...
    def transaction(self) -> AbstractAsyncContextManager[None]: ...
    def in_transaction(self) -> bool:
        """Whether this task's calls run inside a ``transaction()`` (so their writes may
        still be undone)."""
    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(job_id)`` when a job is queued or its task's end is recorded,
        by this process or (where the backend can tell) another one."""

    # users and the ledger
    async def lock_user(self, key: str) -> None: ...
    async def user(self, key: str) -> dict[str, Any] | None: ...
    async def add_user(self, row: dict[str, Any]) -> None: ...
    async def update_user(self, key: str, **changes: Any) -> None: ...
    async def add_ledger(self, **entry: Any) -> None: ...
    async def settle(self, job_id: int, outcome: str) -> bool: ...
    async def user_and_active_jobs(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """``user(key)`` (locked as it locks) and ``count_active(key)``, in one read."""
    async def insert_reserved_job(self, row: dict[str, Any], *, user: dict[str, Any], entry: dict[str, Any],
                                  media: Sequence[MediaItem] = ()) -> ReservedJob:
        """Write a new job (``row``) with, all or nothing: its user's row as it must now be
        (``user``, every column but ``version``: inserted, or replacing the stored one but
        for its ``created_at``), the ledger row ``entry`` (its ``job_id`` set to the new
        job's) and its media. Returns the job as written; a queued one wakes listeners as
        ``insert_job`` does."""
    async def reserve_if_unchanged(self, row: dict[str, Any], *, user: dict[str, Any], version: int,
                                   active_below: int, entry: dict[str, Any],
                                   media: Sequence[MediaItem] = ()) -> ReservedJob | None:
        """``insert_reserved_job`` only if the user's stored row still has ``version`` and
        they have fewer than ``active_below`` active jobs; else None and nothing written."""
    async def commit_job(self, job_id: int, *, owner: str, entry: dict[str, Any], drop_media: bool,
                         **changes: Any) -> bool:
        """End a job at once, while ``owner`` holds it: ``changes`` to its row, its
        reservation moved from ``reserved`` to ``committed`` with the ledger row ``entry``
        only if it was still reserved (True then), and with ``drop_media`` its media
        forgotten. LeaseLost, and nothing changed, when ``owner`` no longer holds it."""

    # jobs
    async def insert_job(self, row: dict[str, Any]) -> int: ...
    async def job(self, job_id: int) -> Job | None: ...
    async def job_row(self, job_id: int) -> dict[str, Any]: ...
    async def update_job(self, job_id: int, *, owner: str | None = None, known: Job | None = None,
                         **changes: Any) -> Job: ...
    async def record_result(self, job_id: int, prediction_id: str, result: dict[str, Any]) -> Job | None: ...
    async def submits_in_window(self, model_id: str, job_id: int, start: float,
                                end: float) -> list[tuple[float, float | None]]: ...
    async def prediction_claimed(self, prediction_id: str, job_id: int) -> bool: ...
    async def user_jobs(self, user_key: str, *, active_only: bool = True, limit: int = 10) -> list[Job]: ...
    async def finished_jobs(self, user_key: str, limit: int = 10) -> list[Job]: ...
    async def count_active(self, user_key: str) -> int: ...
    async def queue_position(self, job_id: int) -> int: ...
    async def recent_run_seconds(self, model_id: str, duration: str | None, limit: int = 20) -> list[float]: ...
    async def effect_counts(self) -> dict[str, int]: ...
    async def usage_since(self, platform: str, since: float, place_key: str,
                          place: object) -> tuple[int, int]: ...

    # spend (``bot.spend``)
    async def spend_usd(self, since: float, place_key: str | None = None, *,
                        credit_usd: Decimal = ...) -> Decimal:
        """USD spent by jobs created at or after ``since`` (of ``place_key`` only, when
        given), each counted as ``SPEND_OF_JOB`` says (a job without a quote: its credits at
        ``credit_usd``), exactly."""
    async def lock_spend(self) -> None:
        """Inside a transaction: hold the lock every accept under a cap takes, to its end."""
    async def claim_alert(self, key: str, at: float) -> bool:
        """Record the admin alert ``key`` as sent at ``at``; False when it was already, by
        any process (the caller then sends nothing)."""

    # the model catalog's source (``bot.catalog``), shared by every process
    async def model_listing(self) -> tuple[list[dict[str, Any]], float] | None:
        """WaveSpeed's model listing as last saved, and when it was fetched; None before the first."""
    async def save_model_listing(self, listing: list[dict[str, Any]], fetched_at: float) -> None:
        """Keep a listing fetched at ``fetched_at`` unless the one kept is as new or newer (one
        statement: a slower process's older listing never replaces a newer one)."""

    # copying between stores (``bot.store.copy``)
    async def contents(self) -> dict[str, int]:
        """Rows per table of ``COPIED_TABLES``, and the media's bytes under ``MEDIA_BYTES``."""
    def export_batches(self, table: str) -> AsyncIterator[list[dict[str, Any]]]:
        """Every row of a table of ``COPIED_TABLES``, in key order, a batch at a time (at
        most ``EXPORT_ROWS`` rows and ``EXPORT_BYTES`` of media, or one larger file alone): every column, JSON
        columns as Python values, a job's media with its bytes under "data" (no path)."""
    async def import_batch(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Write exported rows as they are, ids included (new rows get ids after them)."""
    async def erase(self) -> None:
        """Delete every row of ``COPIED_TABLES`` and the media they kept."""
    async def live_leases(self, now: float) -> list[tuple[int, float]]:
        """(job id, lease end) of unfinished jobs whose process's lease still holds."""

    # what the bot did (/stats, ``kling-bot stats``)
    async def daily_stats(self, since: float, until: float, reset_hour_utc: int, *, top: int = 5,
                          credit_usd: Decimal = ...) -> Activity:
        """Jobs by outcome, spend in USD and credits spent per credit period (day) of
        [since, until), every day of it (empty ones too); the span's ``top`` busiest users
        and places and its failures by kind; the jobs queued and running now; each day's
        purchases and refunds (``DayActivity.payments``) (``bot.store.activity``, which also
        says how a job's spend is counted and on which day a payment counts)."""
    async def payments_since(self, since: float, user_key: str | None = None) -> list[dict[str, Any]]:
        """Payments (#18) credited at ``since`` or later, of ``user_key`` (None: everyone's), newest
        first: key, platform, user_key, pack, credits, stars, sku_id, at, consumed_at,
        refunded_at, refunded_credits, refund_short, refunded_by."""
    # the operator's controls (#17: pause, bans)
    async def bot_state(self, key: str) -> dict[str, Any] | None:
        """The bot-wide value kept under ``key`` (e.g. "pause"), shared by every process; None: none."""
    async def set_bot_state(self, key: str, value: dict[str, Any] | None, at: float) -> None:
        """Keep ``value`` under ``key`` (None: forget it)."""
    async def ban(self, user_key: str, *, at: float, by: str, reason: str) -> bool:
        """Ban a user; False when they were banned already (the first ban stays)."""
    async def unban(self, user_key: str) -> bool:
        """Lift a ban; False when there was none."""
    async def ban_of(self, user_key: str) -> dict[str, Any] | None:
        """The user's ban (user_key, at, by, reason); None: not banned."""
    async def bans(self) -> list[dict[str, Any]]:
        """Every ban, oldest first."""
    async def queued_job_ids(self) -> list[int]:
        """The jobs waiting in the queue (state queued), first come first."""
    async def cancel_queued(self, job_id: int, *, finished_at: float, error: str, failure: str) -> Job | None:
        """Cancel a job only while it is queued and nothing of it reached WaveSpeed (one
        write, fenced on its state: a job a process claimed meanwhile is left alone): the
        job as cancelled (nothing charged), or None. Its refund is the caller's."""

    # payments (#18): one row per charge, keyed "telegram:<charge id>" / "discord:<entitlement id>"
    async def insert_payment(self, row: dict[str, Any]) -> bool:
        """Write a payment (key, platform, user_key, pack, credits, stars, sku_id, details as a
        Python value, at) unless one with its key exists, by any process (then nothing, False)."""
    async def payment(self, key: str) -> dict[str, Any] | None:
        """The payment with this key (every column, details as a Python value); None: none."""
    async def latest_payment(self, user_key: str) -> dict[str, Any] | None:
        """The user's newest payment not refunded; None: none."""
    async def mark_refunded(self, key: str, *, at: float, by: str, credits: int, short: int) -> bool:
        """Record the payment's refund (``credits`` taken back, ``short`` not: already spent)
        only if it was not refunded yet; False then, nothing written."""
    async def mark_consumed(self, key: str, at: float) -> None:
        """Record when Discord was told the entitlement is consumed (the first time stays)."""
    async def make_up_refund(self, key: str, credits: int) -> bool:
        """Move ``credits`` of a refunded payment's ``refund_short`` to its ``refunded_credits``
        (credits a job held at the refund, given back since), only if its short is that many
        or more; False then, nothing written."""

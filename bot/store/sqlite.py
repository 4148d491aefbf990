"""The SQLite backend of the store (``bot.store.interface``), through sqlite-utils: the
embedded default, for processes on one machine sharing one file.

One file, WAL mode, numbered migrations tracked in ``PRAGMA user_version``. Writes
that must be atomic together (a job and its credit reservation) run inside
``transaction()``, which takes SQLite's write lock up front (BEGIN IMMEDIATE) so two
processes sharing the file cannot interleave a read-check-write. The methods are
``async`` to keep the interface, but run at once: a local file answers in
microseconds, and a transaction's body then never yields to another coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.jobs import ACTIVE_STATES, Job, JobState
from bot.store.interface import (
    ASK_LIFETIME,
    LISTING_SOURCE,
    MAX_JOB_ID,
    QUEUE_PLACES,
    STAGED_LIFETIME,
    LeaseLost,
    MediaItem,
    ReservedJob,
    Staged,
    TaskTaken,
    exact,
    mended,
)
from bot.store.sqlite_access import SqliteAccess
from bot.store.sqlite_metrics import SqliteMetrics
from bot.store.sqlite_payments import SqlitePayments
from bot.store.sqlite_spend import SqliteSpend
from bot.store.sqlite_stats import SqliteStats
from bot.store.sqlite_transfer import SqliteTransfer

JOB_FIELDS = {f.name for f in dataclasses.fields(Job)}


def _v1(db: sqlite_utils.Database) -> None:
    db.table("users").create({
        "key": str, "platform": str, "name": str, "period": str,
        "daily_left": int, "bonus": int, "created_at": float,
    }, pk="key", not_null={"platform", "period", "daily_left", "bonus"}, defaults={"bonus": 0})
    db.table("jobs").create({
        "id": int, "user_key": str, "platform": str, "reply_to": str,
        "model_id": str, "kind": str, "inputs": str, "label": str,
        "cost": int, "paid_daily": int, "paid_bonus": int, "period": str,
        "settlement": str,  # reserved -> committed | refunded
        "state": str, "not_before": float, "submit_attempts": int,
        "prediction_id": str, "result_url": str, "output_url": str, "nsfw": int,
        "video_path": str, "error": str, "inference_ms": int,
        "created_at": float, "updated_at": float, "submitted_at": float,
        "finished_at": float,
    }, pk="id", foreign_keys=[("user_key", "users", "key")],
        defaults={"settlement": "reserved", "submit_attempts": 0, "nsfw": 0, "not_before": 0})
    db.table("jobs").create_index(["state", "id"])
    db.table("jobs").create_index(["user_key", "state"])
    db.table("job_media").create({
        "job_id": int, "role": str, "mime": str, "filename": str, "data": bytes,
    }, pk=("job_id", "role"), foreign_keys=[("job_id", "jobs", "id")])
    db.table("ledger").create({
        "id": int, "at": float, "user_key": str, "job_id": int, "entry": str,
        "daily_delta": int, "bonus_delta": int, "note": str,
    }, pk="id")
    db.table("ledger").create_index(["user_key", "at"])


def _v2(db: sqlite_utils.Database) -> None:
    # A question the bot asked in a chat and the answer it waits for (e.g. "reply with
    # the voice note"), kept in the database so the answer still works after a restart.
    db.table("pending_asks").create({
        "platform": str, "chat": str, "message_id": str, "data": str, "created_at": float,
    }, pk=("platform", "chat", "message_id"))


def _v3(db: sqlite_utils.Database) -> None:
    # Claims: the process driving a job (owner) and until when its claim holds; the
    # submit window (for finding a task whose submit was not confirmed); resubmits.
    jobs = db.table("jobs")
    for name, kind in (("owner", str), ("lease_until", float), ("submit_started_at", float),
                       ("submit_ended_at", float)):
        jobs.add_column(name, kind)
    jobs.add_column("resubmits", int, not_null_default=0)
    jobs.create_index(["owner", "state"])
    jobs.create_index(["prediction_id"])


def _v4(db: sqlite_utils.Database) -> None:
    # A task's end as WaveSpeed's webhook reported it (JSON), and when the bot learned
    # that the video was ready (run times for the poll plan are measured from submit).
    jobs = db.table("jobs")
    jobs.add_column("webhook_result", str)
    jobs.add_column("completed_at", float)


def _v5(db: sqlite_utils.Database) -> None:
    # A job's photo and audio live in files beside the database (the row keeps the path):
    # megabytes of BLOBs made every write and the file itself heavy.
    db.table("job_media").add_column("path", str)


def _v6(db: sqlite_utils.Database) -> None:
    # One job per WaveSpeed task, whatever any process believes.
    db.execute("create unique index jobs_one_job_per_task on jobs (prediction_id)"
               " where prediction_id is not null")


def _v7(db: sqlite_utils.Database) -> None:
    # Every index is written on every insert: drop the two nothing reads (the unique
    # one of v6 serves look-ups by task id; no query reads the ledger by user and time).
    db.execute("drop index if exists idx_jobs_prediction_id")
    db.execute("drop index if exists idx_ledger_user_key_at")


def _v8(db: sqlite_utils.Database) -> None:
    # Every question, lease renewal and Telegram update mark deletes the ones past a day.
    db.table("pending_asks").create_index(["created_at"])


def _v9(db: sqlite_utils.Database) -> None:
    # A user row's version: every write to the row moves it on (the trigger, so no write
    # path can forget), so an accept that computed its reservation from a row it read
    # earlier can write only if the row is still that one (``reserve_if_unchanged``).
    # SQLite's triggers cannot change NEW: an AFTER trigger writes the version, and its
    # own write (version now above the old one) does not match its WHEN.
    db.table("users").add_column("version", int, not_null_default=0)
    db.execute("create trigger users_version after update on users for each row"
               " when new.version <= old.version"
               " begin update users set version = old.version + 1 where rowid = new.rowid; end")


def _v10(db: sqlite_utils.Database) -> None:
    # WaveSpeed's model listing (JSON text), one row per source, so every process and a
    # restart without network build the same catalog; and the USD price quoted for each
    # job as decimal text (a float would not keep it exact; NULL: a job from before).
    db.table("model_listing").create({"source": str, "listing": str, "fetched_at": float},
                                     pk="source", not_null={"listing", "fetched_at"})
    db.table("jobs").add_column("quote_usd", str)


def _v11(db: sqlite_utils.Database) -> None:
    # The operator's controls (#17). A job's place (the Discord server or Telegram chat
    # whose spend it counts to), what WaveSpeed charged for it once known (decimal text;
    # NULL: not known yet) and, for a job that failed, the kind of failure (for /stats and
    # /metrics). A user's daily allowance in their current period (NULL: [quota]
    # daily_credits; a role or a chat may give more). Bans, the bot-wide state (a pause)
    # and the admin alerts already sent (each once, whichever process reached the mark).
    jobs = db.table("jobs")
    jobs.add_column("place_key", str)
    jobs.add_column("charged_usd", str)
    jobs.add_column("failure", str)
    db.table("users").add_column("allowance", int)
    db.table("bans").create({"user_key": str, "at": float, "by": str, "reason": str}, pk="user_key")
    db.table("bot_state").create({"key": str, "value": str, "updated_at": float}, pk="key")
    db.table("alerts_sent").create({"key": str, "at": float}, pk="key")
    db.execute("create index jobs_created_at on jobs (created_at)")


def _v12(db: sqlite_utils.Database) -> None:
    # Payments (#18). Purchased credits are a third bucket of a user's (never expiring,
    # spent after the daily and the bonus ones), so a refund can take back what is left of
    # them; a job and a ledger row say how many of those it moved. One row per charge
    # (a Telegram Stars charge, a Discord entitlement), keyed "telegram:<charge id>" /
    # "discord:<entitlement id>": the primary key makes each charge credit once.
    db.table("users").add_column("purchased", int, not_null_default=0)
    db.table("jobs").add_column("paid_purchased", int, not_null_default=0)
    db.table("ledger").add_column("purchased_delta", int, not_null_default=0)
    db.table("payments").create({
        "key": str, "platform": str, "user_key": str, "pack": str, "credits": int, "stars": int,
        "sku_id": str, "details": str, "at": float, "consumed_at": float, "refunded_at": float,
        "refunded_credits": int, "refund_short": int, "refunded_by": str,
    }, pk="key", not_null={"platform", "user_key", "pack", "credits", "at"})
    db.execute("create index payments_user_key_at on payments (user_key, at)")
    db.execute("create index payments_at on payments (at)")


# Append only: a database at version N runs migrations N+1.. in order.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9, _v10, _v11, _v12]
ACTIVE = tuple(s.value for s in ACTIVE_STATES)


def _key(part: object) -> str:
    """A question's chat or message as its key: any text, ``mended`` (a forged one too)."""
    return mended(str(part))


class SqlitePendingAsks:
    """Questions a chat asked a user (e.g. "reply with the voice note"), kept so that the
    answer still works after a restart; unanswered ones are dropped after a day."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db

    async def put(self, platform: str, chat: object, message_id: object, data: dict[str, Any],
            now: float) -> None:
        self._forget_before(now - ASK_LIFETIME)
        self.db.execute("insert or replace into pending_asks (platform, chat, message_id, data, created_at)"
                        " values (?, ?, ?, ?, ?)", [platform, _key(chat), _key(message_id), json.dumps(data), now])

    async def get(self, platform: str, chat: object, message_id: object) -> dict[str, Any] | None:
        row = self.db.execute("select data from pending_asks where platform = ? and chat = ? and message_id = ?",
                              [platform, _key(chat), _key(message_id)]).fetchone()
        return json.loads(row[0]) if row else None

    async def claim(self, platform: str, chat: object, message_id: object, now: float,
              window: float | None = None) -> bool:
        """Mark a one-use message (a menu) used; False when it already was, by any process.
        With ``window``, an earlier mark older than that many seconds no longer counts."""
        if window is not None:
            self.db.execute("delete from pending_asks where platform = ? and chat = ? and message_id = ?"
                            " and created_at < ?", [platform, _key(chat), _key(f"used:{message_id}"), now - window])
        cursor = self.db.execute("insert or ignore into pending_asks (platform, chat, message_id, data, created_at)"
                                 " values (?, ?, ?, '{\"used\": true}', ?)",
                                 [platform, _key(chat), _key(f"used:{message_id}"), now])
        return cursor.rowcount == 1

    async def forget_before(self, moment: float) -> None:
        """Drop every question and one-use mark made before ``moment``."""
        self._forget_before(moment)

    def _forget_before(self, moment: float) -> None:
        self.db.execute("delete from pending_asks where created_at < ?", [moment])

    async def unclaim(self, platform: str, chat: object, message_id: object) -> None:
        await self.drop(platform, chat, f"used:{message_id}")

    async def drop(self, platform: str, chat: object, message_id: object) -> None:
        self.db.execute("delete from pending_asks where platform = ? and chat = ? and message_id = ?",
                        [platform, _key(chat), _key(message_id)])


class SqliteMediaFiles:
    """A job's photo and audio, in files beside the database (rows keep their paths),
    from the moment it is accepted until it fails, or for ``[storage] keep_days`` after
    its video was delivered (its result buttons make new jobs from them)."""

    def __init__(self, db: sqlite_utils.Database, folder: Path):
        self.db = db
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    async def stage(self, data: bytes, filename: str) -> Staged:
        """Write media before its job exists (in a worker thread: no disk I/O on the event
        loop); ``put`` then gives it to the job. Stale staged files are swept."""
        path = self.folder / f"staged-{uuid.uuid4().hex}{Path(filename).suffix}"
        await asyncio.to_thread(path.write_bytes, data)
        return Staged(filename, path=path)

    async def discard(self, staged: Staged) -> None:
        """Remove a staged file no job took (a refused request)."""
        if staged.path is not None:
            staged.path.unlink(missing_ok=True)

    async def put(self, job_id: int, role: str, mime: str, filename: str, data: bytes | Staged) -> None:
        """Keep a job's photo or audio (bytes, or a staged file): the file is in place before
        the row (call it inside the job's transaction; a failed one leaves an orphan file)."""
        path = self.folder / f"job-{job_id}-{role}{Path(filename).suffix}"
        if isinstance(data, Staged):
            assert data.path is not None
            data.path.replace(path)
        else:
            path.write_bytes(data)
        self.db.execute("insert into job_media (job_id, role, mime, filename, path) values (?, ?, ?, ?, ?)",
                        [job_id, role, mime, filename, str(path)])

    async def get(self, job_id: int) -> dict[str, dict[str, Any]]:
        """A job's media by role, each with its bytes under "data"."""
        found = {}
        cursor = self.db.execute("select role, mime, filename, data, path from job_media where job_id = ?",
                                 [job_id])
        for role, mime, filename, data, path in cursor.fetchall():
            row = {"role": role, "mime": mime, "filename": filename, "data": data, "path": path}
            if row["path"]:
                row["data"] = Path(row["path"]).read_bytes()
            found[row["role"]] = row
        return found

    async def has(self, job_id: int, role: str = "image") -> bool:
        return self.db.execute("select 1 from job_media where job_id = ? and role = ?",
                               [job_id, role]).fetchone() is not None

    async def sweep(self) -> int:
        """Remove media files no job row points at (left by a crash mid-accept)."""
        # By job number, not by path: another process may name the same folder differently.
        kept = {job_id for (job_id,) in self.db.execute("select distinct job_id from job_media").fetchall()}
        removed = 0
        for path in self.folder.glob("staged-*"):  # an accept's, if fresh; else a crash's
            if time.time() - path.stat().st_mtime > STAGED_LIFETIME:
                path.unlink(missing_ok=True)
        for path in self.folder.glob("job-*"):
            number = path.name.split("-")[1]
            if not (number.isascii() and number.isdecimal() and int(number) in kept):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    async def expire(self, finished_before: float) -> list[int]:
        """Forget the photo, audio and typed prompts of jobs that ended before a moment
        (the model, effect and length stay: run times are learnt from them)."""
        ended = [job_id for (job_id,) in self.db.execute(
            f"select id from jobs where finished_at < ? and not {_in('state', ACTIVE)} and"
            " (id in (select job_id from job_media) or json_extract(inputs, '$.prompt') is not null"
            " or json_extract(inputs, '$.negative_prompt') is not null)",
            [finished_before, *ACTIVE]).fetchall()]
        for job_id in ended:
            await self.drop(job_id)
            self.db.execute("update jobs set inputs = json_remove(inputs, '$.prompt', '$.negative_prompt')"
                            " where id = ?", [job_id])
        return ended

    async def drop(self, job_id: int) -> None:
        for (path,) in self.db.execute("delete from job_media where job_id = ? returning path",
                                       [job_id]).fetchall():
            if path:
                Path(path).unlink(missing_ok=True)


class _SqliteReads:
    """The store's read-only queries (a part of ``SqliteStore``, kept apart for length)."""

    db: sqlite_utils.Database

    def _value(self, sql: str, args: list[Any] | None = None) -> Any:
        """The first column of the first row of a query."""
        return self.db.execute(sql, args or []).fetchone()[0]

    def _rows(self, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts, in plain SQL: the hot path does no schema look-ups."""
        cursor = self.db.execute(sql, args or [])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def _jobs_where(self, where: str, args: list[Any], order: str = "id",
                    limit: int | None = None) -> list[Job]:
        bounded = f" limit {int(limit)}" if limit is not None else ""
        return [_job(r) for r in self._rows(f"select * from jobs where {where} order by {order}{bounded}", args)]

    async def submits_in_window(self, model_id: str, job_id: int, start: float,
                          end: float) -> list[tuple[float, float | None]]:
        """(started, ended) of other jobs' submits of a model begun in a window that have
        no task id yet: their tasks, if any, may be among this window's."""
        rows = self.db.execute(
            "select submit_started_at, submit_ended_at from jobs where model_id = ? and id != ?"
            " and state = 'submitting' and prediction_id is null and submit_started_at between ? and ?",
            [model_id, job_id, start, end]).fetchall()
        return [(float(started), None if ended is None else float(ended)) for started, ended in rows]

    async def prediction_claimed(self, prediction_id: str, job_id: int) -> bool:
        """Whether a job other than ``job_id`` follows this task, or had it named by a webhook
        to its own URL (WaveSpeed sends a task's end to its submit's URL first: the same
        delivery at another job's URL is a replay)."""
        return bool(self._value(
            "select count(*) from jobs where id != ? and (prediction_id = ? or"
            " (webhook_result is not null and json_extract(webhook_result, '$.id') = ?))",
            [job_id, prediction_id, prediction_id]))

    async def user_jobs(self, user_key: str, *, active_only: bool = True, limit: int = 10) -> list[Job]:
        states = ACTIVE_STATES if active_only else tuple(JobState)
        return self._jobs_where(f"user_key = ? and {_in('state', states)}",
                               [user_key, *[s.value for s in states]], order="id desc")[:limit]

    async def finished_jobs(self, user_key: str, limit: int = 10) -> list[Job]:
        """A user's ended jobs, newest first."""
        return self._jobs_where(f"user_key = ? and not {_in('state', ACTIVE)}", [user_key, *ACTIVE],
                               order="id desc", limit=limit)

    async def count_active(self, user_key: str) -> int:
        return int(self._value(f"select count(*) from jobs where user_key = ? and {_in('state', ACTIVE)}",
                               [user_key, *ACTIVE]))

    async def queue_position(self, job_id: int) -> int:
        """1-based place among queued jobs, first come first served; 0 if not queued."""
        return int(self._value(
            "select count(*) from jobs where state = 'queued' and id <= ?"
            " and exists (select 1 from jobs j where j.id = ? and j.state = 'queued')",
            [job_id, job_id]))

    async def recent_run_seconds(self, model_id: str, duration: str | None, limit: int = 20) -> list[float]:
        """How long the last jobs of a model took from submit to a ready video."""
        rows = self.db.execute(
            "select completed_at - submitted_at, inputs from jobs where model_id = ?"
            " and completed_at is not null and submitted_at is not null order by id desc limit ?",
            [model_id, limit * 3]).fetchall()
        return [span for span, inputs in rows
                if json.loads(inputs).get("duration") == duration][:limit]

    async def effect_counts(self) -> dict[str, int]:
        """How often each effect was asked for, for "most used first" menus."""
        rows = self.db.execute(
            "select json_extract(inputs, '$.effect_scene') as effect, count(*) from jobs"
            " where kind = 'effect' group by effect").fetchall()
        return {effect: count for effect, count in rows if effect}

    async def usage_since(self, platform: str, since: float, place_key: str, place: object) -> tuple[int, int]:
        """(jobs, credits spent) on a platform since a moment, in one place (e.g. a server)."""
        row = self.db.execute(
            "select count(*), coalesce(sum(case when settlement != 'refunded' then cost end), 0)"
            " from jobs where platform = ? and created_at >= ?"
            " and cast(json_extract(reply_to, '$.' || ?) as text) = ?",
            [platform, since, place_key, str(place)]).fetchone()
        return row[0], row[1]


def _switch_to_wal(db: sqlite_utils.Database, busy_timeout: float) -> None:
    """Put the file in WAL mode, waiting out other processes that open it at the same moment.

    Two connections switching a fresh file at once both hold a read lock and want the
    exclusive one; SQLite answers one of them "database is locked" at once, without its
    busy handler (it would be a deadlock), so the switch is retried here."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class _SqliteListing:
    """The model listing the catalog is built from (a part of ``SqliteStore``)."""

    db: sqlite_utils.Database

    async def model_listing(self) -> tuple[list[dict[str, Any]], float] | None:
        row = self.db.execute("select listing, fetched_at from model_listing where source = ?",
                              [LISTING_SOURCE]).fetchone()
        return (json.loads(row[0]), float(row[1])) if row else None

    async def save_model_listing(self, listing: list[dict[str, Any]], fetched_at: float) -> None:
        """One statement (its own transaction, unless the caller is in one): the row is
        replaced only by a listing fetched later than the one it holds."""
        self.db.execute("insert into model_listing (source, listing, fetched_at) values (?, ?, ?)"
                        " on conflict (source) do update set listing = excluded.listing,"
                        " fetched_at = excluded.fetched_at where excluded.fetched_at > model_listing.fetched_at",
                        [LISTING_SOURCE, json.dumps(listing), fetched_at])


class SqliteStore(_SqliteReads, _SqliteListing, SqliteSpend, SqliteTransfer, SqliteMetrics, SqliteStats,
                  SqliteAccess, SqlitePayments):
    """The bot's database in one SQLite file. Not thread-safe: one per event loop."""

    hears_other_processes = False  # another process's changes are seen by looking again

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0):
        self.path = Path(path)
        in_memory = str(path) == ":memory:"
        if not in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Job media: files beside the database (a temporary folder for an in-memory one).
        media_dir = Path(tempfile.mkdtemp(prefix="kling-media-")) if in_memory \
            else self.path.parent / f"{self.path.name}-media"
        # timeout: how long a write waits for another process's lock before failing.
        # isolation_level=None: autocommit. Each statement commits at once unless it runs
        # in transaction(); Python's implicit BEGIN would otherwise hold the write lock
        # after a lone UPDATE until some later commit, blocking every other process.
        self.db = sqlite_utils.Database(sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None))
        if not in_memory:
            _switch_to_wal(self.db, busy_timeout)
            # With WAL, NORMAL loses no committed data on a process crash (only, at worst,
            # the last transactions on a power cut) and spares an fsync per commit.
            self.db.execute("PRAGMA synchronous = NORMAL")
            # Checkpoints (the only fsyncs left) every 16 MB of WAL rather than every 4 MB.
            self.db.execute("PRAGMA wal_autocheckpoint = 4000")
        self.db.execute("PRAGMA foreign_keys = ON")
        self._one_transaction = asyncio.Lock()
        self._transaction_task: asyncio.Task[Any] | None = None
        self._listeners: list[Callable[[int], None]] = []
        self._migrate()
        self.asks = SqlitePendingAsks(self.db)
        self.claims = SqliteClaims(self)
        self.files = SqliteMediaFiles(self.db, media_dir)

    async def close(self) -> None:
        self.db.close()

    def _migrate(self) -> None:
        with self._locked():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")

    async def schema_version(self) -> int:
        return int(self._value("PRAGMA user_version"))

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        columns = ", ".join(row)  # names come from code, not users
        cursor = self.db.execute(f"insert into {table} ({columns}) values ({', '.join('?' * len(row))})",
                                 _mended(row.values()))
        return int(cursor.lastrowid or 0)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """One atomic unit of work holding the write lock from its first statement; a
        transaction of the same task inside it joins it (as a savepoint)."""
        task = asyncio.current_task()
        if self._transaction_task is task:
            with self.db.atomic():
                yield
            return
        async with self._one_transaction:  # one coroutine at a time on this connection
            self._transaction_task = task
            try:
                with self._locked():
                    yield
            finally:
                self._transaction_task = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def in_transaction(self) -> bool:
        return self._transaction_task is not None and self._transaction_task is asyncio.current_task()

    def on_change(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(job_id)`` when this process queues a job or records a task's
        end (other processes on the file are seen by the scheduler's poll)."""
        self._listeners.append(listener)

    def _notify(self, job_id: int) -> None:
        for listener in self._listeners:
            listener(job_id)

    async def lock_user(self, key: str) -> None:
        """Nothing to do: a transaction already holds SQLite's one write lock."""

    # --- users and the ledger ----------------------------------------------------

    async def user(self, key: str) -> dict[str, Any] | None:
        rows = self._rows("select * from users where key = ?", [key])
        return rows[0] if rows else None

    async def add_user(self, row: dict[str, Any]) -> None:
        self._insert("users", row)

    async def update_user(self, key: str, **changes: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in changes)  # names come from code, not users
        self.db.execute(f"update users set {columns} where key = ?", [*_mended(changes.values()), key])

    async def add_ledger(self, **entry: Any) -> None:
        self._insert("ledger", entry)

    async def settle(self, job_id: int, outcome: str) -> bool:
        """Mark a job's reservation committed or refunded, once: False if already settled."""
        cursor = self.db.execute(
            "update jobs set settlement = ? where id = ? and settlement = 'reserved'",
            [outcome, job_id])
        return cursor.rowcount == 1

    async def user_and_active_jobs(self, key: str) -> tuple[dict[str, Any] | None, int]:
        return await self.user(key), await self.count_active(key)

    async def insert_reserved_job(self, row: dict[str, Any], *, user: dict[str, Any], entry: dict[str, Any],
                                  media: Sequence[MediaItem] = ()) -> ReservedJob:
        """The job, its user's row, its ledger row and its media in one transaction."""
        async with self.transaction():
            return await self._write_reserved(row, user, entry, media)

    async def reserve_if_unchanged(self, row: dict[str, Any], *, user: dict[str, Any], version: int,
                                   active_below: int, entry: dict[str, Any],
                                   media: Sequence[MediaItem] = ()) -> ReservedJob | None:
        """The check and the writes in one transaction: SQLite's one write lock lets no
        other writer in between."""
        async with self.transaction():
            stored = self._rows("select version from users where key = ?", [user["key"]])
            if not stored or stored[0]["version"] != version or await self.count_active(user["key"]) >= active_below:
                return None
            return await self._write_reserved(row, user, entry, media)

    async def _write_reserved(self, row: dict[str, Any], user: dict[str, Any], entry: dict[str, Any],
                              media: Sequence[MediaItem]) -> ReservedJob:
        # Names come from code, not users; when the user first came stays (as on PostgreSQL).
        names = ["key", *(name for name in user if name not in ("key", "version"))]
        updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in ("key", "created_at"))
        self.db.execute(f"insert into users ({', '.join(names)}) values ({', '.join('?' * len(names))})"
                        f" on conflict (key) do update set {updates}", _mended(user[name] for name in names))
        job_id = await self.insert_job(row)
        await self.add_ledger(**{**entry, "job_id": job_id})
        for item in media:
            await self.files.put(job_id, item.role, item.mime, item.filename, item.data)
        job = self._job(job_id)
        assert job is not None
        version = self._value("select version from users where key = ?", [user["key"]])
        return ReservedJob(job, int(version), await self.queue_position(job_id))

    async def commit_job(self, job_id: int, *, owner: str, entry: dict[str, Any], drop_media: bool,
                         **changes: Any) -> bool:
        """The job's end and its credit committed in one transaction (LeaseLost undoes it all)."""
        async with self.transaction():
            await self.update_job(job_id, owner=owner, **changes)
            settled = await self.settle(job_id, "committed")
            if settled:
                await self.add_ledger(**entry)
            if drop_media:
                await self.files.drop(job_id)
        return settled

    # --- jobs -----------------------------------------------------------------

    async def insert_job(self, row: dict[str, Any]) -> int:
        row = {**row, "reply_to": json.dumps(row["reply_to"]), "inputs": json.dumps(row["inputs"])}
        job_id = self._insert("jobs", row)
        self._notify(job_id)  # listeners only wake tasks, which run after the transaction
        return job_id

    async def job(self, job_id: int) -> Job | None:
        return self._job(job_id)

    def _job(self, job_id: int) -> Job | None:
        if not 0 < job_id <= MAX_JOB_ID:  # a number typed by a user: no such job
            return None
        rows = self._rows("select * from jobs where id = ?", [job_id])
        return _job(rows[0]) if rows else None

    async def job_row(self, job_id: int) -> dict[str, Any]:
        row = self._rows("select * from jobs where id = ?", [job_id])[0]
        return {**row, "quote_usd": exact(row["quote_usd"]), "charged_usd": exact(row["charged_usd"])}

    async def update_job(self, job_id: int, *, owner: str | None = None, known: Job | None = None,
                   **changes: Any) -> Job:
        """One write to a job row; returns the job as it now is (``known``, the job as the
        caller has it, spares reading the row back).

        With ``owner``, the write happens only while that process holds the job, and
        LeaseLost says it no longer does (a fence: two processes never both drive it).
        """
        if isinstance(changes.get("state"), JobState):
            changes["state"] = changes["state"].value
        columns = ", ".join(f"{name} = ?" for name in changes)  # names come from code, not users
        fence = " and owner = ?" if owner else ""
        try:
            cursor = self.db.execute(f"update jobs set {columns} where id = ?{fence}",
                                     [*_mended(changes.values()), job_id, *([owner] if owner else [])])
        except sqlite3.IntegrityError:
            raise TaskTaken(changes.get("prediction_id")) from None
        if cursor.rowcount != 1:
            raise LeaseLost(job_id) if owner else KeyError(job_id)
        if known is not None:
            kept = {name: value for name, value in changes.items() if name in JOB_FIELDS}
            if "state" in kept:
                kept["state"] = JobState(kept["state"])
            if "nsfw" in kept:
                kept["nsfw"] = bool(kept["nsfw"])
            return dataclasses.replace(known, **kept)
        job = self._job(job_id)
        assert job is not None
        return job

    async def record_result(self, job_id: int, prediction_id: str, result: dict[str, Any]) -> Job | None:
        """Keep a task's end as its webhook reported it, for the job that submitted it
        (one still waiting for its task); None when no such job waits for it. The first
        task reported stays: a later delivery naming another task never replaces it."""
        if not 0 < job_id <= MAX_JOB_ID:
            return None
        cursor = self.db.execute(
            "update jobs set webhook_result = ? where id = ? and state in ('submitting', 'processing')"
            " and (prediction_id is null or prediction_id = ?)"
            " and (webhook_result is null or json_extract(webhook_result, '$.id') = ?)",
            [json.dumps(result), job_id, prediction_id, prediction_id])
        if cursor.rowcount != 1:
            return None
        self._notify(job_id)
        return self._job(job_id)


def _mended(values: Iterable[Any]) -> list[Any]:
    """Values as SQLite can store them: text ``mended`` (untrusted input may be broken), a
    ``Decimal`` as its exact text (sqlite3 cannot bind one; a float would round it)."""
    return [mended(value) if isinstance(value, str) else str(value) if isinstance(value, Decimal) else value
            for value in values]


def _in(column: str, values: tuple[Any, ...]) -> str:
    return f"{column} in ({', '.join('?' * len(values))})"


def _job(row: dict[str, Any]) -> Job:
    return Job(
        id=row["id"], user_key=row["user_key"], platform=row["platform"],
        reply_to=json.loads(row["reply_to"] or "{}"), model_id=row["model_id"],
        kind=row["kind"], inputs=json.loads(row["inputs"] or "{}"), label=row["label"],
        cost=row["cost"], state=JobState(row["state"]), prediction_id=row["prediction_id"],
        result_url=row["result_url"], output_url=row["output_url"], nsfw=bool(row["nsfw"]),
        video_path=row["video_path"], error=row["error"], created_at=row["created_at"],
        submitted_at=row["submitted_at"], finished_at=row["finished_at"], owner=row["owner"],
        submit_started_at=row["submit_started_at"], submit_ended_at=row["submit_ended_at"],
        resubmits=row["resubmits"] or 0, submit_attempts=row["submit_attempts"] or 0,
        webhook_result=json.loads(row["webhook_result"]) if row["webhook_result"] else None,
        quote_usd=exact(row["quote_usd"]),
        place_key=row["place_key"] or "", charged_usd=exact(row["charged_usd"]), failure=row["failure"],
    )


class SqliteClaims:
    """Which process drives which job. A job belongs to the process that accepted it, as a
    lease the owner renews. A process claims only its own queued jobs, and takes over the
    jobs of a process whose lease ran out (it died) when it serves their platform. Each
    claim is one transaction holding SQLite's write lock, so two processes never claim
    one job; every later write to the job is fenced by ``update_job(..., owner=...)``."""

    def __init__(self, store: SqliteStore):
        self.store = store

    async def claim_next(self, owner: str, platforms: list[str], lease_until: float, now: float,
                         exclude: set[int], *, adopt: bool = False, user_key: str | None = None) -> Job | None:
        """Move this process's first due queued job to ``submitting``; with ``adopt``, also a
        queued job no live process holds (accepted by a front, or its owner died), of
        ``user_key``'s when given. None if none is due."""
        skip = tuple(exclude) or (0,)
        where, args = _claimable(owner, platforms, now, adopt, user_key)
        async with self.store.transaction():
            job_id = self.store._value(
                f"select coalesce(min(id), 0) from jobs where {where} and not_before <= ?"
                f" and id not in ({', '.join('?' * len(skip))})", [*args, now, *skip])
            if not job_id:
                return None
            self.store.db.execute("update jobs set state = ?, owner = ?, lease_until = ?, updated_at = ?"
                                  " where id = ?", [JobState.SUBMITTING.value, owner, lease_until, now, job_id])
            return self.store._job(int(job_id))

    async def take_over(self, owner: str, platforms: list[str], lease_until: float,
                  now: float, *, user_key: str | None = None) -> list[Job]:
        """Take the started jobs of these platforms (of one user, when given) whose owner's
        lease ran out; queued ones are adopted one at a time by ``claim_next``."""
        where = (f"state in ({', '.join('?' * len(ACTIVE))}) and state != 'queued'"
                 f" and {_in('platform', tuple(platforms))}"
                 " and (lease_until is null or lease_until < ?)" + (" and user_key = ?" if user_key else ""))
        args = [*ACTIVE, *platforms, now, *([user_key] if user_key else [])]
        async with self.store.transaction():
            taken = self.store.db.execute(f"select id from jobs where {where}", args).fetchall()
            self.store.db.execute(f"update jobs set owner = ?, lease_until = ? where {where}",
                                  [owner, lease_until, *args])
        return [job for (job_id,) in taken if (job := self.store._job(job_id)) is not None]

    async def renew(self, owner: str, lease_until: float, *, after: int = 0,
                    limit: int | None = None) -> dict[int, JobState]:
        """Extend this process's claims on jobs numbered above ``after``, the first ``limit``
        of them (None: all); returns the jobs renewed, by id, with their states."""
        active = _in("state", ACTIVE)
        rows = self.store.db.execute(
            f"update jobs set lease_until = ? where owner = ? and {active} and id in ("
            f" select id from jobs where owner = ? and {active} and id > ? order by id limit ?)"
            " returning id, state",
            [lease_until, owner, *ACTIVE, owner, *ACTIVE, after, -1 if limit is None else limit]).fetchall()
        return {job_id: JobState(state) for job_id, state in rows}

    async def release(self, owner: str) -> None:
        """Hand this process's unfinished jobs over at once (a clean stop): its queued ones
        become no process's (any may adopt them; a wake-up says so), its started ones lapse
        for a take-over."""
        async with self.store.transaction():
            queued = self.store.db.execute("update jobs set owner = null, lease_until = null"
                                           " where owner = ? and state = 'queued' returning id", [owner]).fetchall()
            self.store.db.execute(f"update jobs set lease_until = 0 where owner = ? and {_in('state', ACTIVE)}",
                                  [owner, *ACTIVE])
        if queued:
            self.store._notify(min(job_id for (job_id,) in queued))

    async def release_job(self, job_id: int, owner: str) -> None:
        """Give up one job's claim at once (its driver stopped unexpectedly)."""
        self.store.db.execute("update jobs set lease_until = 0 where id = ? and owner = ?", [job_id, owner])

    async def live_owner(self, job_id: int, now: float) -> str | None:
        """The process whose lease on this unfinished job still holds, if any."""
        if not 0 < job_id <= MAX_JOB_ID:
            return None
        row = self.store.db.execute(f"select owner from jobs where id = ? and lease_until >= ? and"
                                    f" {_in('state', ACTIVE)}", [job_id, now, *ACTIVE]).fetchone()
        return row[0] if row else None

    async def held(self, owner: str) -> list[Job]:
        """This process's unfinished jobs (its own and those it took over)."""
        return self.store._jobs_where(f"owner = ? and {_in('state', ACTIVE)}", [owner, *ACTIVE])

    async def own_queued(self, owner: str, *, after: int = 0, limit: int | None = None) -> list[Job]:
        """This process's queued jobs numbered above ``after``, first come first, the first
        ``limit`` of them (None: all)."""
        return self.store._jobs_where("state = 'queued' and owner = ? and id > ?", [owner, after], limit=limit)

    async def waiting_places(self, owner: str, platforms: list[str], now: float, *, after: int = 0,
                             limit: int | None = None) -> list[tuple[Job, int]]:
        """Unowned queued jobs of these platforms with their places in the whole line."""
        rows = self.store._rows(
            "select * from (select *, row_number() over (order by id) as place from jobs where state = 'queued')"
            f" where id > ? and {_in('platform', tuple(platforms) or ('',))}"
            " and (owner is null or (owner != ? and (lease_until is null or lease_until < ?))) order by id limit ?",
            [after, *(platforms or [""]), owner, now, -1 if limit is None else limit])
        return [(_job(row), int(row["place"])) for row in rows]

    async def mark_places(self, places: dict[int, int], now: float) -> set[int]:
        """In one transaction (SQLite's write lock): a lower place replaces the one recorded."""
        marked: set[int] = set()
        async with self.store.transaction():
            for job_id, place in places.items():
                row = self.store.db.execute("select data from pending_asks where platform = ? and chat = ?"
                                            " and message_id = ''", [QUEUE_PLACES, str(job_id)]).fetchone()
                if row is None or json.loads(row[0]).get("place", place + 1) > place:
                    self.store.db.execute(
                        "insert or replace into pending_asks (platform, chat, message_id, data, created_at)"
                        " values (?, ?, '', ?, ?)", [QUEUE_PLACES, str(job_id), json.dumps({"place": place}), now])
                    marked.add(job_id)
        return marked

    async def next_due(self, owner: str, platforms: list[str], now: float, *, adopt: bool = False,
                       user_key: str | None = None) -> float | None:
        """When the earliest queued job ``claim_next`` could take may start (None: none)."""
        where, args = _claimable(owner, platforms, now, adopt, user_key)
        due = self.store._value(f"select min(not_before) from jobs where {where}", args)
        return None if due is None else float(due)


def _claimable(owner: str, platforms: list[str], now: float, adopt: bool,
               user_key: str | None) -> tuple[str, list[Any]]:
    """Queued jobs of these platforms that are this owner's, or (``adopt``) no live one's."""
    where = f"state = 'queued' and {_in('platform', tuple(platforms) or ('',))} and (owner = ?"
    args: list[Any] = [*(platforms or [""]), owner]
    if adopt:
        where += " or ((owner is null or lease_until is null or lease_until < ?)"
        args.append(now)
        if user_key is not None:
            where += " and user_key = ?"
            args.append(user_key)
        where += ")"
    return where + ")", args

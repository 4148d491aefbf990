"""The PostgreSQL backend's questions, media and claims (``bot.store.interface``), with
the SQLite backend's semantics (``bot.store.sqlite``).

Media live in ``job_media`` rows (bytea): every process on every machine reads them.
Claims take rows with ``FOR UPDATE SKIP LOCKED``, so claimers never wait on each other
and never take one job twice.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from bot.jobs import ACTIVE_STATES, Job, JobState
from bot.store.interface import ASK_LIFETIME, LISTING_SOURCE, MAX_JOB_ID, QUEUE_PLACES, Staged
from bot.store.pg_migrations import CHANNEL, storable
from bot.store.pg_session import Connections

ACTIVE = [s.value for s in ACTIVE_STATES]


def job_from_row(row: asyncpg.Record) -> Job:
    """A Job exactly as the SQLite backend builds it from its row."""
    return Job(
        id=row["id"], user_key=row["user_key"], platform=row["platform"],
        reply_to=row["reply_to"] if row["reply_to"] is not None else {}, model_id=row["model_id"],
        kind=row["kind"], inputs=row["inputs"] if row["inputs"] is not None else {}, label=row["label"],
        cost=row["cost"], state=JobState(row["state"]), prediction_id=row["prediction_id"],
        result_url=row["result_url"], output_url=row["output_url"], nsfw=bool(row["nsfw"]),
        video_path=row["video_path"], error=row["error"], created_at=row["created_at"],
        submitted_at=row["submitted_at"], finished_at=row["finished_at"], owner=row["owner"],
        submit_started_at=row["submit_started_at"], submit_ended_at=row["submit_ended_at"],
        resubmits=row["resubmits"] or 0, submit_attempts=row["submit_attempts"] or 0,
        webhook_result=row["webhook_result"], quote_usd=row["quote_usd"],
        place_key=row["place_key"] or "", charged_usd=row["charged_usd"], failure=row["failure"],
    )


def _key(part: object) -> str:
    """A question's chat or message as its key: any text, made storable (a forged one too)."""
    return storable(str(part))


class PgPendingAsks:
    """Questions a chat asked a user, and one-use marks, shared by every process."""

    def __init__(self, db: Connections):
        self.db = db

    async def put(self, platform: str, chat: object, message_id: object, data: dict[str, Any],
                  now: float) -> None:
        async with self.db.connection() as conn:
            await conn.execute("delete from pending_asks where created_at < $1", now - ASK_LIFETIME)
            await conn.execute(
                "insert into pending_asks (platform, chat, message_id, data, created_at) values ($1, $2, $3, $4, $5)"
                " on conflict (platform, chat, message_id) do update set data = excluded.data,"
                " created_at = excluded.created_at", platform, _key(chat), _key(message_id), data, now)

    async def forget_before(self, moment: float) -> None:
        """Drop every question and one-use mark made before ``moment``."""
        await self.db.execute("delete from pending_asks where created_at < $1", moment)

    async def get(self, platform: str, chat: object, message_id: object) -> dict[str, Any] | None:
        data = await self.db.fetchval(
            "select data from pending_asks where platform = $1 and chat = $2 and message_id = $3",
            platform, _key(chat), _key(message_id))
        return data  # type: ignore[no-any-return]

    async def claim(self, platform: str, chat: object, message_id: object, now: float,
                    window: float | None = None) -> bool:
        """Mark a one-use message used; False when it already was, by any process. With
        ``window``, an earlier mark older than that many seconds no longer counts."""
        mark = _key(f"used:{message_id}")
        async with self.db.connection() as conn:
            if window is not None:
                await conn.execute("delete from pending_asks where platform = $1 and chat = $2 and message_id = $3"
                                   " and created_at < $4", platform, _key(chat), mark, now - window)
            status = await conn.execute(
                "insert into pending_asks (platform, chat, message_id, data, created_at)"
                " values ($1, $2, $3, '{\"used\": true}', $4) on conflict do nothing",
                platform, _key(chat), mark, now)
        return str(status) == "INSERT 0 1"

    async def unclaim(self, platform: str, chat: object, message_id: object) -> None:
        await self.drop(platform, chat, f"used:{message_id}")

    async def drop(self, platform: str, chat: object, message_id: object) -> None:
        await self.db.execute("delete from pending_asks where platform = $1 and chat = $2 and message_id = $3",
                              platform, _key(chat), _key(message_id))


class PgMediaFiles:
    """A job's photo and audio as bytes in ``job_media``, from its acceptance until it
    fails, or for ``[storage] keep_days`` after its video was delivered."""

    def __init__(self, db: Connections):
        self.db = db

    async def stage(self, data: bytes, filename: str) -> Staged:
        """Nothing to write ahead: the bytes go into the job's transaction with its row."""
        return Staged(filename, data=data)

    async def discard(self, staged: Staged) -> None:
        """Nothing to remove: a staged file here is only bytes in memory."""

    async def put(self, job_id: int, role: str, mime: str, filename: str, data: bytes | Staged) -> None:
        payload = data.data if isinstance(data, Staged) else data
        if payload is None:  # a file staged by a SQLite store
            assert isinstance(data, Staged) and data.path is not None
            payload = data.path.read_bytes()
        await self.db.execute("insert into job_media (job_id, role, mime, filename, data) values ($1, $2, $3, $4, $5)",
                              job_id, role, mime, filename, payload)

    async def get(self, job_id: int) -> dict[str, dict[str, Any]]:
        """A job's media by role, each with its bytes under "data"."""
        rows = await self.db.fetch("select role, mime, filename, data, path from job_media where job_id = $1",
                                   job_id)
        return {row["role"]: dict(row) for row in rows}

    async def has(self, job_id: int, role: str = "image") -> bool:
        return await self.db.fetchval("select 1 from job_media where job_id = $1 and role = $2",
                                      job_id, role) is not None

    async def sweep(self) -> int:
        """Remove media no job row owns (none can be left by a crash mid-accept here: a job
        and its media commit together; this keeps the interface's promise all the same)."""
        return await self.db.execute(
            "delete from job_media m where not exists (select 1 from jobs j where j.id = m.job_id)")

    async def expire(self, finished_before: float) -> list[int]:
        """Forget the photo, audio and typed prompts of jobs that ended before a moment
        (the model, effect and length stay: run times are learnt from them)."""
        async with self.db.transaction():
            rows = await self.db.fetch(
                "select id from jobs where finished_at < $1 and not state = any($2::text[]) and"
                " (exists (select 1 from job_media m where m.job_id = jobs.id) or inputs->>'prompt' is not null"
                " or inputs->>'negative_prompt' is not null) order by id", finished_before, ACTIVE)
            ended = [row["id"] for row in rows]
            await self.db.execute("delete from job_media where job_id = any($1::bigint[])", ended)
            await self.db.execute("update jobs set inputs = inputs - 'prompt' - 'negative_prompt'"
                                  " where id = any($1::bigint[])", ended)
        return ended

    async def drop(self, job_id: int) -> None:
        await self.db.execute("delete from job_media where job_id = $1", job_id)


class PgModelListing:
    """The model listing the catalog is built from (a part of ``PostgresStore``)."""

    db: Connections

    async def model_listing(self) -> tuple[list[dict[str, Any]], float] | None:
        row = await self.db.fetchrow("select listing, fetched_at from model_listing where source = $1",
                                     LISTING_SOURCE)
        return (row["listing"], float(row["fetched_at"])) if row is not None else None

    async def save_model_listing(self, listing: list[dict[str, Any]], fetched_at: float) -> None:
        """One statement, in autocommit outside a transaction: it locks only this row, which
        no accept or claim waits for. A rival's upsert waits for it, then finds its row and
        compares against that: the later fetch stays, whichever commits last."""
        await self.db.execute(
            "insert into model_listing (source, listing, fetched_at) values ($1, $2, $3)"
            " on conflict (source) do update set listing = excluded.listing, fetched_at = excluded.fetched_at"
            " where excluded.fetched_at > model_listing.fetched_at", LISTING_SOURCE, listing, fetched_at)


class PgClaims:
    """Which process drives which job: as SQLite's claims (``SqliteClaims``), each claim
    one statement over rows taken with ``FOR UPDATE SKIP LOCKED``."""

    def __init__(self, db: Connections):
        self.db = db

    async def claim_next(self, owner: str, platforms: list[str], lease_until: float, now: float,
                         exclude: set[int], *, adopt: bool = False, user_key: str | None = None) -> Job | None:
        """Move this process's first due queued job to ``submitting``; with ``adopt``, also a
        queued job no live process holds (accepted by a front, or its owner died), of
        ``user_key``'s when given. None if none is due. Rivals skip a row being claimed."""
        row = await self.db.fetchrow(
            "update jobs set state = 'submitting', owner = $3, lease_until = $1, updated_at = $2 where id = ("
            " select id from jobs where state = 'queued' and platform = any($4::text[])"
            " and not_before <= $2 and id <> all($5::bigint[]) and (owner = $3 or ($6 and"
            " (owner is null or lease_until is null or lease_until < $2) and ($7::text is null or user_key = $7)))"
            " order by id limit 1 for update skip locked)"
            " returning *", lease_until, now, owner, platforms, list(exclude), adopt, user_key)
        return job_from_row(row) if row is not None else None

    async def take_over(self, owner: str, platforms: list[str], lease_until: float,
                        now: float, *, user_key: str | None = None) -> list[Job]:
        """Take the started jobs of these platforms (of one user, when given) whose owner's
        lease ran out; queued ones are adopted one at a time by ``claim_next``."""
        rows = await self.db.fetch(
            "update jobs set owner = $1, lease_until = $2 where id in ("
            " select id from jobs where state = any($3::text[]) and state <> 'queued' and platform = any($4::text[])"
            " and (lease_until is null or lease_until < $5) and ($6::text is null or user_key = $6)"
            " for update skip locked) returning *", owner, lease_until, ACTIVE, platforms, now, user_key)
        return sorted((job_from_row(row) for row in rows), key=lambda job: job.id)

    async def renew(self, owner: str, lease_until: float, *, after: int = 0,
                    limit: int | None = None) -> dict[int, JobState]:
        """Extend this process's claims on jobs numbered above ``after``, the first ``limit``
        of them (None: all); returns the jobs renewed, by id, with their states."""
        # The outer conditions again: a row another process took meanwhile is not renewed.
        rows = await self.db.fetch(
            "update jobs set lease_until = $1 where owner = $2 and state = any($3::text[]) and id in ("
            " select id from jobs where owner = $2 and state = any($3::text[]) and id > $4 order by id limit $5)"
            " returning id, state", lease_until, owner, ACTIVE, after, limit)
        return {row["id"]: JobState(row["state"]) for row in rows}

    async def release(self, owner: str) -> None:
        """Hand this process's unfinished jobs over at once (a clean stop): its queued ones
        become no process's (any may adopt them, and one wake-up says so to every
        listener), its started ones lapse for a take-over."""
        await self.db.execute(
            "with queued as (update jobs set owner = null, lease_until = null"
            "  where owner = $1 and state = 'queued' returning id),"
            " started as (update jobs set lease_until = 0 where owner = $1 and state = any($2::text[])"
            "  and state <> 'queued')"
            f" select pg_notify('{CHANNEL}', min(id)::text) from queued having count(*) > 0", owner, ACTIVE)

    async def release_job(self, job_id: int, owner: str) -> None:
        """Give up one job's claim at once (its driver stopped unexpectedly)."""
        await self.db.execute("update jobs set lease_until = 0 where id = $1 and owner = $2", job_id, owner)

    async def live_owner(self, job_id: int, now: float) -> str | None:
        """The process whose lease on this unfinished job still holds, if any."""
        if not 0 < job_id <= MAX_JOB_ID:
            return None
        owner: str | None = await self.db.fetchval(
            "select owner from jobs where id = $1 and lease_until >= $2 and state = any($3::text[])",
            job_id, now, ACTIVE)
        return owner

    async def held(self, owner: str) -> list[Job]:
        """This process's unfinished jobs (its own and those it took over)."""
        rows = await self.db.fetch("select * from jobs where owner = $1 and state = any($2::text[]) order by id",
                                   owner, ACTIVE)
        return [job_from_row(row) for row in rows]

    async def own_queued(self, owner: str, *, after: int = 0, limit: int | None = None) -> list[Job]:
        """This process's queued jobs numbered above ``after``, first come first, the first
        ``limit`` of them (None: all)."""
        rows = await self.db.fetch("select * from jobs where state = 'queued' and owner = $1 and id > $2"
                                   " order by id limit $3", owner, after, limit)
        return [job_from_row(row) for row in rows]

    async def waiting_places(self, owner: str, platforms: list[str], now: float, *, after: int = 0,
                             limit: int | None = None) -> list[tuple[Job, int]]:
        """Unowned queued jobs of these platforms with their places in the whole line."""
        rows = await self.db.fetch(
            "select * from (select *, row_number() over (order by id) as place from jobs where state = 'queued')"
            " as line where id > $1 and platform = any($2::text[])"
            " and (owner is null or (owner <> $5 and (lease_until is null or lease_until < $3)))"
            " order by id limit $4", after, platforms, now, limit, owner)
        return [(job_from_row(row), int(row["place"])) for row in rows]

    async def mark_places(self, places: dict[int, int], now: float) -> set[int]:
        """One statement: a lower place replaces the one recorded (the row locked while it
        does, so a rival's equal place finds it taken)."""
        if not places:
            return set()
        rows = await self.db.fetch(
            "insert into pending_asks (platform, chat, message_id, data, created_at)"
            " select $1, job::text, '', jsonb_build_object('place', place), $4"
            " from unnest($2::bigint[], $3::bigint[]) as marks(job, place)"
            " on conflict (platform, chat, message_id) do update set data = excluded.data,"
            " created_at = excluded.created_at"
            " where (pending_asks.data->>'place')::bigint > (excluded.data->>'place')::bigint returning chat",
            QUEUE_PLACES, list(places), list(places.values()), now)
        return {int(row["chat"]) for row in rows}

    async def next_due(self, owner: str, platforms: list[str], now: float, *, adopt: bool = False,
                       user_key: str | None = None) -> float | None:
        """When the earliest queued job ``claim_next`` could take may start (None: none)."""
        due = await self.db.fetchval(
            "select min(not_before) from jobs where state = 'queued' and platform = any($2::text[])"
            " and (owner = $1 or ($3 and (owner is null or lease_until is null or lease_until < $4)"
            " and ($5::text is null or user_key = $5)))", owner, platforms, adopt, now, user_key)
        return None if due is None else float(due)

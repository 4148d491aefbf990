"""Platform-neutral types of a generation job and the courier port adapters implement.

Types only: the sentences their ``text`` members return are built in ``bot.messages``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol

from bot import messages
from bot.catalog import Kind, Params


class JobState(str, enum.Enum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    PROCESSING = "processing"
    DOWNLOADING = "downloading"
    DELIVERING = "delivering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


ACTIVE_STATES = tuple(s for s in JobState if not s.finished)
# What a job that did not deliver failed of (``Job.failure``), for /stats and /metrics:
# WaveSpeed's content filter (code 1200), inputs it refused (1400-1405), its own fault or
# its task failing, no end within [wavespeed] job_timeout, the video not downloaded, the
# chat refusing it, the model withdrawn, cancelled by its owner, its process stopped.
FAILURE_KINDS = ("moderated", "refused", "wavespeed", "timeout", "download", "delivery",
                 "withdrawn", "cancelled", "stopped", "other")


@dataclass(frozen=True)
class UserRef:
    """Who asked: the platform and its user id (plus a display name for logs/admins)."""

    platform: str
    user_id: str
    name: str = ""
    # Where they ask from, for their daily allowance ([discord.roles], [telegram.chats]):
    # their Discord role ids in the server they ask in, the Telegram chat they ask in.
    # Not who they are: the same user compares equal from anywhere.
    roles: tuple[str, ...] = field(default=(), compare=False)
    chat: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.user_id}"


@dataclass
class GenerationRequest:
    """One ask from a chat, already turned into plain data by an adapter."""

    user: UserRef
    kind: Kind
    image: bytes
    params: Params = field(default_factory=Params)
    model: str | None = None  # short name or id; None = the kind's default
    end_image: bytes | None = None
    audio: bytes | None = None
    # Where to answer, as the adapter needs it after a restart (chat id, message id…).
    reply_to: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    id: int
    user_key: str
    platform: str
    reply_to: dict[str, Any]
    model_id: str
    kind: Kind
    inputs: dict[str, Any]
    label: str
    cost: int
    state: JobState
    prediction_id: str | None = None
    result_url: str | None = None
    output_url: str | None = None
    nsfw: bool = False
    video_path: str | None = None
    error: str | None = None
    created_at: float = 0.0
    submitted_at: float | None = None
    finished_at: float | None = None
    owner: str | None = None  # the process driving the job
    submit_started_at: float | None = None  # set while a submit may have created a task
    submit_ended_at: float | None = None  # when that submit went unanswered
    resubmits: int = 0  # submits sent again after WaveSpeed provably had no task
    submit_attempts: int = 0  # submits refused at the door (429, 503), retried later
    webhook_result: dict[str, Any] | None = None  # the task's end, as its webhook reported it
    quote_usd: Decimal | None = None  # WaveSpeed's price for it when accepted (None: unquoted, or older)
    place_key: str = ""  # the server or chat whose spend it counts to ("discord:guild:1"; "": none)
    charged_usd: Decimal | None = None  # what WaveSpeed charged, once known (0: nothing; None: not yet)
    failure: str | None = None  # a failed job's kind of failure (``bot.jobs.FAILURE_KINDS``)

    @property
    def seconds(self) -> int:
        return int(self.inputs.get("duration", 5))

    @property
    def place(self) -> str:
        """The chat or channel the job answers in ("" when it has none, e.g. the console)."""
        where = self.reply_to.get("chat_id", self.reply_to.get("channel_id"))
        return "" if where is None else str(where)


@dataclass(frozen=True)
class Press:
    """A result button pressed, or a form about a job submitted: who, in which chat or
    channel, and whether the platform shows the pressed message is the bot's own message
    carrying that very button (button data and custom ids come from the client and prove
    nothing by themselves). Built by the constructors below, which say which it is."""

    user: UserRef
    place: str
    on_its_message: bool

    @classmethod
    def of_button(cls, user: UserRef, place: str, *, carried: bool) -> Press:
        """A button pressed in ``place``; ``carried``: the platform's copy of the pressed
        message holds a button with exactly the data the press names."""
        return cls(user, place, carried)

    @classmethod
    def from_chat(cls, user: UserRef, place: str) -> Press:
        """Acting in ``place``, vouched for by the chat itself rather than by a pressed
        message: a command or an answer sent there, a form submitted there. It reaches what
        a press on the bot's own message in that chat would (its jobs, not another chat's)."""
        return cls(user, place, True)

    def for_menu_of(self, owner: UserRef, *, made_for_chat: bool) -> Press | None:
        """This press on a menu or list the bot made for ``owner`` (the effects under their
        photo, their /effects, their /history): who it acts for, or None when it may not use
        it. Only from the menu itself (the owner named in its data is the client's word too).
        A menu made for a person serves only that person. A menu made for a chat speaking
        as itself (``made_for_chat``: an anonymous group admin, a channel) has no person
        the platform names: anyone pressing it in that chat acts, and pays, as that chat
        identity, as if they had typed the command as it; that is what its menu quoted
        (the chat identity's credits), and where its jobs, /history and questions are kept.
        Each such menu starts at most one job (the adapter claims it), so a member of the
        chat cannot drain the chat identity's credits through it."""
        if not self.on_its_message:
            return None
        if self.user.key == owner.key:
            return self
        return Press.from_chat(owner, self.place) if made_for_chat else None

    def may_use(self, job: Job) -> bool:
        """The trust rule for every button and form that names a job: its owner may, and
        so may anyone pressing the bot's own message for it in the job's chat."""
        return job.user_key == self.user.key or (self.on_its_message and job.place == self.place)

    def may_show(self, job: Job, *, private: bool) -> bool:
        """Whether a job's label (it quotes the prompt) may be shown where this happens: in
        a private chat, or in a shared chat only a job made there (a private chat's prompts
        stay private)."""
        return private or job.place == self.place

    def may_post_again(self, job: Job, *, private: bool) -> bool:
        """/history's rule: only its owner posts a past video again, and in a shared chat
        only a video made there (``may_show``)."""
        return job.user_key == self.user.key and self.may_show(job, private=private)


@dataclass(frozen=True)
class Accepted:
    job: Job
    position: int  # 1 = next to start; 0 = already running
    credits_left: int

    @property
    def text(self) -> str:
        return messages.accepted(self.job.id, self.job.label, self.position, self.job.cost,
                                 self.credits_left)


@dataclass(frozen=True)
class Rejected:
    reason: str  # user-facing
    offer_packs: bool = False  # out of credits where the platform sells packs: show the buy buttons

    @property
    def text(self) -> str:
        return self.reason


Stage = Literal["queued", "submitting", "generating", "downloading", "uploading"]


@dataclass(frozen=True)
class Progress:
    stage: Stage
    position: int | None = None  # for queued
    elapsed: float = 0.0  # seconds since the job reached WaveSpeed
    expected: float | None = None  # rough total run time, for a progress bar

    @property
    def fraction(self) -> float | None:
        """Rough completion estimate, capped below 1 until the video exists."""
        if self.stage != "generating" or not self.expected:
            return None
        return min(0.95, self.elapsed / self.expected)

    @property
    def remaining(self) -> float | None:
        """Seconds left by the engine's estimate (negative: running late)."""
        if self.stage != "generating" or not self.expected:
            return None
        return self.expected - self.elapsed

    def text(self) -> str:
        return messages.progress(self.stage, self.position, self.elapsed, self.fraction, self.remaining)


@dataclass(frozen=True)
class Video:
    path: Path
    size: int
    nsfw: bool
    url: str | None  # WaveSpeed's output URL (kept 7 days): a fallback link for big files


@dataclass(frozen=True)
class Balance:
    """A user's credits right now."""

    daily_left: int
    bonus: int
    resets_at: datetime
    allowance: int | None = None  # their daily credits, when a role or chat makes them not [quota]'s
    purchased: int = 0  # bought credits (#18): never reset, spent after the daily and the bonus ones

    @property
    def total(self) -> int:
        return self.daily_left + self.bonus + self.purchased

    def text(self, now: datetime | None = None) -> str:
        if self.purchased:
            return messages.balance_with_purchased(self.daily_left, self.bonus, self.purchased, self.resets_at,
                                                   now, allowance=self.allowance)
        return messages.balance(self.total, self.bonus, self.resets_at, now, allowance=self.allowance)


class DeliveryRefused(Exception):
    """Raised by a courier's ``deliver`` when the chat refuses the video for good (the user
    blocked the bot, the bot may not post videos there): unlike a network error, trying
    again cannot help. The pipeline then charges the job, keeps the video for /history and
    calls the courier's ``refused``."""


class Courier(Protocol):
    """What the engine calls to show a job's life in a chat. Adapters implement it."""

    async def progress(self, job: Job, update: Progress) -> None: ...

    async def deliver(self, job: Job, video: Video) -> None:
        """Post the video; raises ``DeliveryRefused`` when the chat refuses it for good."""
        ...

    async def refused(self, job: Job, video: Video, days: int) -> None:
        """The chat refused the video (charged, kept for /history ``days`` days): offer it
        privately where the platform can, and tell the owner where to get it."""
        ...

    async def fail(self, job: Job, reason: str) -> None: ...

    async def cancelled(self, job: Job, text: str) -> None:
        """The owner cancelled the job; ``text`` already answered the command."""
        ...

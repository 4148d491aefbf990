"""Every sentence a user reads, one function (or constant) per message.

Chat users, the console and the command line all see these words; nothing else in
the code builds a user-facing sentence. Keeping them here gives one voice on every
platform and one place to translate. Functions take plain values, never platform
objects, so any front end can call them. Log lines are not user-facing and stay
with their code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the types /stats reads (they build their text here)
    from bot.engine.stats import Stats, Window
    from bot.store.activity import Spender

# --- small pieces ---------------------------------------------------------------


def credits(n: int) -> str:
    return f"{n} credit{'s' * (n != 1)}"


def day_count(n: int) -> str:
    return f"{n} day{'s' * (n != 1)}"


def duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


ECHO_LIMIT = 60  # characters of what a user typed that a message quotes back
PATH_ECHO_LIMIT = 200  # a file path, on the console and the command line: more is useful there


def echo(text: object, limit: int = ECHO_LIMIT) -> str:
    """What a user typed (or a name they chose), quoted back at most ``limit`` characters
    long, an ellipsis marking the cut: a 4,000-character effect name must not make the
    answer longer than a chat allows (Telegram 4,096 characters, Discord 2,000)."""
    words = str(text)
    return words if len(words) <= limit else words[:limit - 1] + "…"


EITHER_LIMIT = 20  # choices a sentence lists (a model's listing may offer thousands)


def _either(values: Iterable[object]) -> str:
    items = [echo(v) for v in values]
    ints = [int(v) for v in items if v.isascii() and v.isdigit()]  # "³".isdigit() is true, int("³") fails
    if len(items) > 3 and len(ints) == len(items) and ints == list(range(ints[0], ints[-1] + 1)):
        return f"from {ints[0]} to {ints[-1]}"  # 3..15, not thirteen choices
    if len(items) > EITHER_LIMIT:
        items = [*items[:EITHER_LIMIT], f"{len(items) - EITHER_LIMIT} more"]
    return " or ".join(items)


# Readable effect names for menus where the API's spelling (bot.catalog.EFFECTS) is odd or
# glued together; every other effect reads as its spelling with spaces ("Jelly press").
EFFECT_TITLES: dict[str, str] = {
    "let's_ride": "Let's ride", "boylfriend": "Boyfriend", "offic_escape_plow": "Office escape plow",
    "heart_gesture_1": "Heart gesture", "felt_felt": "Felt", "jumpdrop": "Jump drop",
    "splashsplash": "Splash", "surfsurf": "Surf", "skateskate": "Skate", "plushcut": "Plush cut",
    "pixelpixel": "Pixel", "rocketrocket": "Rocket", "bloombloom": "Bloom", "dizzydizzy": "Dizzy",
    "fuzzyfuzzy": "Fuzzy", "smoke_smoke": "Smoke", "cry_cry": "Cry", "jazz_jazz": "Jazz",
    "fly_fly": "Fly", "swing_swing": "Swing", "ski_ski": "Ski", "wig_out": "Wig out",
}


# --- commands and options: names and descriptions every front end shows ----------

COMMANDS: dict[str, str] = {
    "effect": "Animate a photo with an effect, e.g. /effect hula",
    "animate": "Animate a photo from a prompt",
    "avatar": "Make a photo speak a voice note",
    "effects": "List the effects",
    "models": "The Kling models on offer and their prices",
    "quota": "Your credits and when they reset",
    "jobs": "Your jobs",
    "cancel": "Cancel a queued job of yours",
    "help": "How to use the bot",
    "history": "Your recent videos, to post one again",
    "credits": "Manage credits (admins)",
    "credits grant": "Give a member lasting extra credits",
    "credits set": "Set how many credits a member has now (purchased ones stay)",
    "usage": "Today's videos and credits in this server (admins)",
    "context menu": "Animate with Kling",
}

OPTIONS: dict[str, str] = {
    "scene": "The effect (start typing to search)",
    "image": "The photo to animate (JPEG, PNG, WebP…)",
    "prompt": "What should happen in the video",
    "avatar prompt": "Optional: how the person should look while speaking",
    "audio": "The voice or sound the photo speaks (MP3, WAV, OGG, M4A)",
    "model": "Kling model (start typing; /models lists them)",
    "duration": "Clip length in seconds",
    "negative_prompt": "What to keep out of the video",
    "guidance": "0-1: how closely to follow the prompt",
    "end_image": "The last frame (models that take one)",
    "sound": "With sound (models that make it)",
    "aspect": "Aspect ratio, e.g. 16:9 (models that take one)",
    "job": "The job number (/jobs lists yours)",
    "member": "Whose credits to change",
    "amount": "How many credits",
}


def animate_options(models: Sequence[str], durations: Sequence[int], *, sound: bool = False,
                    aspects: Sequence[str] = ()) -> str:
    """The text-command options of /animate, for help texts and refusals."""
    lengths = (f"{durations[0]}-{durations[-1]}" if len(durations) > 3 else "|".join(map(str, durations))
               ) if durations else "5"
    return (f"--model {'|'.join(models)}  --duration {lengths}  --guidance 0-1  --negative <what to avoid>"
            + ("  --sound" if sound else "") + (f"  --aspect {'|'.join(aspects)}" if aspects else ""))


# --- help -------------------------------------------------------------------------

INTRO = "I turn a photo into a short Kling AI video."


def telegram_help(options: str, prices: str = "") -> str:
    return f"""{INTRO}{" " * bool(prices)}{prices}

/effect hula: send a photo with this caption, or reply it to any photo. \
/effect alone, as a reply to a photo, shows a menu of effects.
/animate a cat dances: the same, with your own prompt. Options: {options}
/avatar [prompt]: reply it to a photo, then answer my message with a voice note or audio file: the photo speaks it.

/effects: the effect menu · /models: the models and prices
/quota: your credits · /jobs: your jobs · /cancel N: cancel a queued job"""


def discord_help(effect_count: int, prices: str = "") -> str:
    return f"""{INTRO}{" " * bool(prices)}{prices}
**/effect** scene image: one of the {effect_count} effects (start typing to search).
**/animate** image prompt [model] [duration] [negative_prompt] [guidance] [end_image] [sound] [aspect]
**/avatar** image audio [prompt]: the photo speaks the audio.
Right-click a message with a photo > Apps > **{COMMANDS['context menu']}** to pick an effect.
**/quota** your credits · **/jobs** your jobs · **/cancel** a queued job · **/effects** all effects
**/models** the models and their prices"""


def console_help(effect_count: int, options: str, prices: str = "") -> str:
    return f"""{prices}
Commands (a photo is a file path; without one the current photo is used):
  /effect NAME [PHOTO]            one of the {effect_count} Kling effects, e.g. /effect hula
  /animate [PHOTO] PROMPT         animate the photo as the prompt says
        options: {options}
  /avatar PHOTO AUDIO [PROMPT]    make the photo speak the audio (mp3/wav/ogg/m4a)
  /photo PATH                     use another photo from now on
  /stats   /balance               the bot's figures and WaveSpeed's balance (as the admins see them)
  /effects   /models   /quota   /jobs   /cancel ID   /help   /quit"""


def effects_list(names: Sequence[str], columns: int = 4) -> str:
    lines = [", ".join(names[i:i + columns]) for i in range(0, len(names), columns)]
    return f"{len(names)} effects:\n" + "\n".join(lines)


# --- prices and first contact --------------------------------------------------------

def price(cost: int, per_seconds: int | None) -> str:
    """``1 credit`` for a fixed-length clip, ``1 credit per 5 s`` for a priced length."""
    return credits(cost) + (f" per {per_seconds} s" if per_seconds else "")


def price_table(pairs: Sequence[tuple[int, int]]) -> str:
    """Prices by clip length: ``4 credits for 5 s, 7 credits for 10 s``."""
    return ", ".join(f"{credits(cost)} for {seconds} s" for seconds, cost in pairs)


def price_list(items: Sequence[tuple[str, str]]) -> str:
    """``Prices: effect 1 credit · v2.1 1 credit per 5 s · …`` from (what, price) pairs."""
    return "Prices: " + " · ".join(f"{what} {cost}" for what, cost in items) + "."


def priced(what: str, cost: int) -> str:
    """A choice with its cost, for menus and pickers: ``hula (1 credit)``."""
    return f"{what} ({credits(cost)})"


def welcome(name: str, balance_text: str, prices: str, how_to_start: str) -> str:
    """/start: what the bot does, the user's credits, what things cost, how to begin."""
    hello = f"Hi {echo(name)}! " if name else "Hi! "
    return f"{hello}{INTRO}\n\n{balance_text}\n{prices}\n\n{how_to_start}"


FIRST_PHOTO_HINT = ("Pick an effect for this photo, or reply to it with /animate <what should happen> "
                    "or /avatar (it speaks a voice note).")
TEXT_POINTER = "Send me a photo to animate it. /help shows what I can do."


# --- refusals before anything is spent ----------------------------------------------

def unknown_model(name: str, choices: Sequence[str]) -> str:
    return f"Unknown model '{echo(name)}'. Choose one of: {', '.join(choices)}."


KIND_PLURALS = {"effect": "Effects", "avatar": "Avatar videos", "animate": "Animations"}


def no_model_choice(kind: str, title: str) -> str:
    """A model named for a kind of video that only one model makes."""
    return f"{KIND_PLURALS.get(kind, kind)} have no model choice: they are always made with {title}."


EFFECT_MISSING = "Name an effect, e.g. /effect hula. /effects lists them all."


def unknown_effect(typed: str, hints: Sequence[str], total: int) -> str:
    typed, hints = echo(typed), [echo(hint) for hint in hints]
    if len(hints) == 1:
        return f"Unknown effect '{typed}'. Did you mean '{hints[0]}'?"
    if hints:
        return f"Unknown effect '{typed}'. Did you mean one of: {', '.join(hints)}?"
    return f"Unknown effect '{typed}'. /effects lists the {total} effects."


def takes_no_prompt(model: str) -> str:
    return f"{model} takes no prompt: the effect decides the motion."


def needs_prompt(model: str) -> str:
    return f"{model} needs a prompt describing the motion, e.g. 'a cat dances'."


def takes_no_negative_prompt(model: str) -> str:
    return f"{model} takes no negative prompt."


def takes_no_guidance(model: str) -> str:
    return f"{model} takes no guidance setting."


def guidance_range(low: float, high: float, default: float, got: float) -> str:
    return (f"Guidance must be between {low:g} and {high:g} "
            f"(got {got:g}); {default:g} is the default.")


def fixed_length(model: str) -> str:
    return f"{model} makes clips of a fixed length; leave out the duration."


def duration_choices(allowed: Sequence[int], got: object) -> str:
    return f"Duration must be {_either(allowed)} seconds (got {echo(got)})."


def end_image_only(models: Sequence[str]) -> str:
    names = " or ".join(f"'{m}'" for m in models)
    return f"Only the {names} model takes an end image."


AVATAR_NEEDS_AUDIO = "The avatar model needs an audio clip or voice note to lip-sync to."


def text_too_long(label: str, length: int, limit: int) -> str:
    return f"{label} is {length} characters; the limit is {limit}."


def unknown_option(word: str, options: str) -> str:
    return f"Unknown option {echo(word)}. Options: {options}."


def option_needs_value(word: str, options: str) -> str:
    return f"{echo(word)} needs a value. Options: {options}."


def effect_takes_no_options(word: str) -> str:
    """The refusal of an option after /effect (an effect is chosen by its name alone)."""
    return f"Unknown option {echo(word)}: effects take no options, just a name, e.g. /effect hula."


def not_a_number(label: str, text: str) -> str:
    return f"{label} must be a number such as 0.5 (got '{echo(text)}')."


def too_many_jobs(limit: int) -> str:
    return (f"You already have {limit} job{'s' * (limit != 1)} queued or running. "
            "Wait for one to finish (/jobs shows them).")


# --- media ----------------------------------------------------------------------------

def media_empty(label: str) -> str:
    return f"The {label} is empty."


def media_too_large(label: str, size: int, limit: int) -> str:
    return f"The {label} is {megabytes(size)}; the bot accepts files up to {megabytes(limit)}."


def media_larger_than(label: str, limit: int) -> str:
    """A file over the limit whose size was not told: only that it is larger is known."""
    return f"The {label} is larger than the {megabytes(limit)} the bot accepts. Send a smaller one."


def image_unreadable(label: str) -> str:
    return (f"The {label} could not be read: it is damaged or not an image. "
            "Send a JPEG, PNG, WebP, GIF or BMP photo.")


def image_too_many_pixels(label: str, width: int | None = None, height: int | None = None) -> str:
    if width and height:
        return f"The {label} is {width}×{height} px, too many pixels to process. Send a smaller one."
    return f"The {label} has too many pixels to process. Send a smaller one."


def image_too_small(label: str, width: int, height: int, min_side: int) -> str:
    return (f"The {label} is {width}×{height} px; Kling needs at least "
            f"{min_side}×{min_side} px. Send a larger {label}.")


def image_bad_shape(label: str, ratio: float) -> str:
    shape = f"{ratio:.1f}:1 (wide)" if ratio >= 1 else f"1:{1 / ratio:.1f} (tall)"
    return (f"The {label} is {shape}; this model needs a shape between "
            f"1:2.5 and 2.5:1. Crop it, or choose another model.")


def image_cannot_shrink(label: str) -> str:
    return f"The {label} cannot be made small enough for Kling. Send a smaller one."


AUDIO_UNREADABLE = "The audio could not be read. Send an MP3, WAV, OGG/Opus or M4A clip."
AUDIO_HAS_VIDEO = "That file has video in it. Send the sound alone (MP3, WAV, OGG or M4A)."
AUDIO_SILENT = "That file has no sound in it."
AUDIO_TOO_SHORT = "The audio is too short; send at least a second of speech."


def audio_too_long(seconds: float, limit: float) -> str:
    return f"The audio is {seconds:.0f} s long; the limit is {limit:.0f} s."


def audio_over_limit(limit: float) -> str:
    """Audio found too long before it was read to its end."""
    return f"The audio is longer than the limit of {limit:.0f} s."


def attachment_wrong_type(what: str, wanted_image: bool, got: str | None) -> str:
    return (f"The {what} must be {'a photo' if wanted_image else 'an audio file'} "
            f"(got {got or 'an unknown file type'}).")


def attachment_too_large(what: str, size: int, limit_mb: float) -> str:
    return f"The {what} is {size / 1048576:.1f} MB; the bot accepts up to {limit_mb:g} MB."


def telegram_file_too_large(what: str, size: int) -> str:
    return (f"The {what} is {size / 1048576:.1f} MB; Telegram lets bots download files up "
            "to 20 MB. Send a smaller one.")


def cannot_find(what: str) -> str:
    return f"I could not find the {what}."


def download_failed(what: str, source: str) -> str:
    return f"I could not download the {what} from {source}. Try again?"


ATTACHMENT_DOWNLOAD_FAILED = "I could not download the attachment. Try again?"


def cannot_read_file(what: str, path: object, why: str) -> str:
    return f"Cannot read the {what} file {echo(path, PATH_ECHO_LIMIT)}: {why}."


# --- credits --------------------------------------------------------------------------

def reset_time(resets_at: datetime, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    minutes = max(1, math.ceil((resets_at - now).total_seconds() / 60))
    hours, minutes = divmod(minutes, 60)
    left = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"at {resets_at:%H:%M} UTC (in {left})"


def balance(total: int, bonus: int, resets_at: datetime, now: datetime | None = None,
            *, allowance: int | None = None) -> str:
    extra = f" (+{bonus} bonus)" if bonus else ""
    to = f" to {allowance}" if allowance is not None else ""  # a role's or chat's, not the usual
    return (f"You have {total} credit{'s' * (total != 1)}{extra}. "
            f"Daily credits reset{to} {reset_time(resets_at, now)}.")


def out_of_credits(cost: int, have: int, daily: int, resets_at: datetime) -> str:
    return (f"You're out of credits: this needs {cost} and you have {have}. "
            f"Daily credits reset to {daily} {reset_time(resets_at)}.")


def now_has_credits(who: str, total: int) -> str:
    return f"{echo(who)} now has {credits(total)}."


ADMINS_ONLY = "Only server managers and the bot's admins can do that."
TELEGRAM_ADMINS_ONLY = "Only the bot's admins can grant credits."
TELEGRAM_GRANT_USAGE = "Reply /grant N to a message of the person to give N credits."


def usage_today(jobs: int, spent: int) -> str:
    return f"Today (UTC) in this server: {jobs} job{'s' * (jobs != 1)}, {credits(spent)} spent."


# --- a job's life -------------------------------------------------------------------

def job_label(model_key: str, model_title: str, inputs: dict[str, object], effect_title: str = "") -> str:
    """The short name a job goes by in every message: ``effect hula``, ``v2.1: a cat…``
    (an effect by its readable name: ``effect boyfriend``, not the API's ``boylfriend``)."""
    if "effect_scene" in inputs:
        return f"effect {(effect_title or str(inputs['effect_scene'])).lower()}"
    prompt = str(inputs.get("prompt") or "")
    short = echo(prompt, 60)
    return f"{model_key}: {short}" if short else model_title


def accepted(job_id: int, label: str, position: int, cost: int, left: int) -> str:
    where = "next in line" if position <= 1 else f"position {position} in the queue"
    return (f"Job {job_id} queued ({label}), {where}. "
            f"It costs {credits(cost)}; {left} left.")


def clock(seconds: float) -> str:
    minutes, seconds = divmod(max(0, round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


def progress(stage: str, position: int | None = None, elapsed: float = 0.0,
             fraction: float | None = None, remaining: float | None = None) -> str:
    if stage == "queued":
        return "Queued, next in line." if (position or 0) <= 1 else f"Queued, position {position}."
    if stage == "generating":
        if fraction is None or remaining is None:
            return f"Generating… {clock(elapsed)} elapsed."
        if remaining <= 0:
            return f"Generating… {fraction:.0%}, taking a little longer than usual."
        return f"Generating… {fraction:.0%}, about {clock(math.ceil(remaining))} left."
    return {"submitting": "Sending to Kling…", "downloading": "Fetching the video…",
            "uploading": "Uploading the video…"}[stage]


def job_status(job_id: int, label: str, text: str) -> str:
    """A job's status message in a chat: ``Job 3 (effect hula): Generating…``."""
    return f"Job {job_id} ({label}): {text}"


def job_done(job_id: int, label: str) -> str:
    return job_status(job_id, label, "done.")


def job_failed(job_id: int, reason: str) -> str:
    return f"Job {job_id}: {reason}"


def caption(label: str, model_title: str) -> str:
    return f"{label} · {model_title}"


def nsfw_withheld(job_id: int) -> str:
    return f"Job {job_id}: WaveSpeed flagged the video as NSFW, so it is not posted here."


def video_refused(job_id: int, label: str, days: int, *, sent_privately: bool, history_where: str = "") -> str:
    """A job's status when its chat refused the video (charged, kept): where to get it.
    ``history_where`` says where /history can post it, e.g. " in a private chat with me"."""
    if sent_privately:
        how = (f"I sent it to you in a private message; /history{history_where} posts it again "
               f"for the next {day_count(days)}.")
    else:
        how = f"/history{history_where} posts it for the next {day_count(days)}."
    return job_status(job_id, label, f"made, but the chat refused it, so it could not be posted here. {how}")


def refused_privately(days: int) -> str:
    """Under a video sent privately because the chat it was asked in refused it."""
    return (f"It could not be posted in the chat where you asked for it. /history posts it again "
            f"for the next {day_count(days)}.")


TELEGRAM_HISTORY_WHERE = " in a private chat with me"
REPOST_REFUSED = "This chat does not let me post videos; use /history in a private chat with me."


def too_big_to_upload(caption_text: str, size: int, limit: str, url: str | None) -> str:
    where = f"Download it here (kept for 7 days): {url}" if url else "It could not be made small enough to post."
    return f"{caption_text}\nThe video is {size / 1048576:.0f} MB, over {limit}. {where}"


def telegram_upload_limit(limit_mb: float) -> str:
    return f"the {limit_mb:g} MB a bot may upload"


DISCORD_UPLOAD_LIMIT = "this server's upload limit"


def console_saved(job_id: int, path: object, size: int, nsfw: bool) -> str:
    flag = " (flagged NSFW by WaveSpeed)" if nsfw else ""
    return f"[job {job_id}] done: {path} ({size / 1024:.0f} KB){flag}"


def console_line(job_id: int, text: str) -> str:
    return f"[job {job_id}] {text}"


def job_list(jobs: Sequence[tuple[int, str, str, int]]) -> str:
    """/jobs: (id, label, state, queue position) per unfinished job."""
    if not jobs:
        return "You have no jobs running."
    return "\n".join(f"Job {job_id} ({label}): "
                     f"{f'queued, position {position}' if position else _STATE_WORDS.get(state, state)}"
                     for job_id, label, state, position in jobs)


# A running job's state as /jobs says it (the database's names are for the log).
_STATE_WORDS = {"submitting": "sending to Kling", "processing": "generating", "downloading": "fetching the video",
                "delivering": "uploading the video"}


MADE_ELSEWHERE = "made in another chat"  # /jobs in a group: a job whose label stays where it was made


def no_such_job(job_id: int) -> str:
    return f"You have no job {echo(job_id)}."  # a number typed after /cancel may be 4,000 digits


def job_already_ended(job_id: int, state: str) -> str:
    return f"Job {job_id} has already ended ({state})."


def job_already_running(job_id: int) -> str:
    return (f"Job {job_id} is already being generated and can no longer be "
            "cancelled; it will be delivered when ready.")


def job_cancelled(job_id: int, cost: int) -> str:
    return f"Job {job_id} cancelled; {credits(cost)} refunded."


def cancelled_status(cost: int) -> str:
    """What a cancelled job's status message ends with (after ``Job N (label): ``)."""
    return f"cancelled; {credits(cost)} refunded."


TELEGRAM_CANCEL_USAGE = "Usage: /cancel N (/jobs lists yours)."
CONSOLE_CANCEL_USAGE = "Usage: /cancel JOB_ID (/jobs lists yours)."


def with_refund(reason: str, cost: int) -> str:
    return f"{reason} Your {credits(cost)} {'were' if cost != 1 else 'was'} refunded."


# Why a job failed (the refund sentence is added by with_refund).
ACCOUNT_PROBLEM = "The bot's WaveSpeed account refused the job; the operator has been told."
SUBMIT_UNCONFIRMED = "WaveSpeed did not confirm the job. Please try again in a minute."
WAVESPEED_BUSY = "WaveSpeed is busy or unreachable right now. Please try again later."
MODERATED = "Kling's content filter refused this photo or prompt."
NO_VIDEO = "Kling finished without a video."
FETCH_FAILED = "The finished video could not be fetched from WaveSpeed."
VIDEO_ON_REFUSED_HOST = ("The video was made, but WaveSpeed put it somewhere the bot is not allowed "
                         "to fetch it from; the operator has been told.")
NOT_POSTED = "The video was made but could not be posted here."
BOT_ERROR = "Something went wrong on the bot's side."


def api_refused(detail: object) -> str:
    return f"WaveSpeed refused the request: {detail}"


def lost_track(detail: object) -> str:
    return f"WaveSpeed lost track of the job ({detail})."


def model_failed(detail: str) -> str:
    return f"Kling could not make this video: {detail}."


def took_too_long(timeout: float) -> str:
    return f"The video took longer than {duration(timeout)} and was stopped."


# --- chat flow ------------------------------------------------------------------------

CHECKING_PHOTO = "Checking the photo…"
POPULAR_EFFECTS = "Popular effects"
ANOTHER_EFFECT = "Another effect…"
EFFECT_NAME = "Effect name"
EFFECT_NAME_EXAMPLE = "e.g. hula, jelly press, santa hug"
MENU_BACK = "‹ Back"
MENU_MORE = "More ›"
MENU_NOT_YOURS = "This menu belongs to whoever asked. Reply /effect to a photo for your own."
DISCORD_MENU_NOT_YOURS = "This menu is for whoever sent the photo. Send me a photo of yours for your own."
PHOTO_GONE = "I can no longer see that photo. Reply /effect to it again."
NO_IMAGE_IN_MESSAGE = "That message has no image to animate."
CHANNEL_NOT_ALLOWED = "I don't make videos in this channel."
CHAT_NOT_ALLOWED = "I don't make videos in this chat."
SOMETHING_WENT_WRONG = "Sorry, something went wrong on my side."
# An accept whose write was cut off and whose outcome the bot could not learn afterwards.
ACCEPT_OUTCOME_UNKNOWN = ("I could not confirm your request: my database stopped answering while I saved it, "
                          "so it may have gone through. Check /jobs before sending it again: a job listed "
                          "there is queued and paid for, and sending it again would be a second job.")
EFFECT_NEEDS_PHOTO = "Reply /effect hula to a photo, or send a photo with that caption."
ANIMATE_NEEDS_PHOTO = "Reply /animate <prompt> to a photo, or send a photo with that caption."
AVATAR_NEEDS_PHOTO = "Reply /avatar to a photo; I will then ask you for the voice note."
AVATAR_AUDIO_NEEDS_PHOTO = ("Send the voice note as a reply to the photo, or reply "
                            "/avatar to the photo first.")


def effect_chosen_toast(effect: str) -> str:
    return f"{effect} it is!"


def effect_chosen(effect: str) -> str:
    return f"Effect {effect} chosen."


def effect_checking(effect: str) -> str:
    return f"Effect {effect}: checking the photo…"


def ask_for_audio(max_seconds: float, cost: int | None = None) -> str:
    price_note = f" It costs {price(cost, 5)} of audio." if cost else ""
    return ("Now reply to this message with a voice note or audio file "
            f"(up to {max_seconds:g} s) and the photo will say it.{price_note}")


def audio_costs_too_much(seconds: float, cost: int, have: int, affordable: float) -> str:
    return (f"The audio is {seconds:.0f} s long and costs {credits(cost)}; you have {have}, "
            f"enough for {affordable:g} s. Send a shorter one.")


def avatar_unaffordable(cost: int, have: int) -> str:
    return (f"A talking photo costs {price(cost, 5)} of audio and you have {credits(have)}. "
            "/quota says when your credits reset.")


# --- results: buttons, history ---------------------------------------------------------

BUTTON_AGAIN = "🔁 Again"
BUTTON_OTHER_EFFECT = "✨ Another effect"
BUTTON_PROMPT = "✍️ Animate with a prompt"
ASK_PROMPT = "Reply to this message with what should happen in the video, e.g. 'she waves and smiles'."


def ask_prompt_for(name: str) -> str:
    """The prompt question in a group, addressed to whoever pressed (the name starts it)."""
    return f"{echo(name)}: {ASK_PROMPT}"


SOURCE_GONE = "The photo of that video is no longer kept. Send it again to make a new one."
VIDEO_GONE = "That video is no longer available at WaveSpeed (videos are kept for 7 days)."


def made_no_video(job_id: int, state: str) -> str:
    return f"Job {job_id} made no video ({state})."


NO_HISTORY = "You have no videos yet. Send a photo to make one."
QUESTION_NOT_YOURS = "That question was for someone else; reply to one of mine that is meant for you."
ALREADY_STARTED = "That button started a video a moment ago; it is on its way."


def history_list(jobs: Sequence[tuple[int, str, str, datetime]], now: datetime | None = None) -> str:
    """/history: (id, label, state, finished at) per recent job, newest first."""
    if not jobs:
        return NO_HISTORY
    now = now or datetime.now(UTC)
    lines = [f"Job {job_id} ({label}): {state}, {_ago(now - at)}" for job_id, label, state, at in jobs]
    return "Your recent jobs:\n" + "\n".join(lines)


def _ago(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // 1440} days ago"


# --- console and command line -------------------------------------------------------

AVATAR_USAGE = "Usage: /avatar PHOTO AUDIO [PROMPT]"
# What the demo types for the user when standard input is empty.
# The demo runs one job at a time, so job 2 waits in the queue: /jobs shows it, /cancel refunds it.
DEMO_TOUR = ["/help", "/effect hula", "/animate --duration 5 the sun smiles and waves", "/jobs",
             "/cancel 2", "/quota"]


def using_photo(path: str) -> str:
    return f"Using {echo(path, PATH_ECHO_LIMIT)} from now on."


def unknown_command(command: str) -> str:
    return f"Unknown command {echo(command)}. /help lists them."


def demo_banner(base_url: str, output_dir: object) -> str:
    return (f"kling-bot demo: offline WaveSpeed simulator at {base_url}; videos go to "
            f"{output_dir}/. Type /help, or /quit to leave.")


def running_banner(adapters: Sequence[str]) -> str:
    return (f"kling-bot is running ({', '.join(adapters)}). "
            "Ctrl+C stops; unfinished jobs resume at the next start.")


NO_API_KEY = ("no WaveSpeed API key: set [wavespeed] api_key in config.toml or the "
              "WAVESPEED_API_KEY environment variable (or try --simulate).")
NO_CHAT_BOT = ("no chat bot is configured. Add a Telegram bot token from @BotFather "
               "([telegram] token or TELEGRAM_BOT_TOKEN) or a Discord bot token ([discord] token "
               "or DISCORD_BOT_TOKEN) to config.toml.")
NO_WORKER_CHAT_BOT = ("a worker delivers to the chat platforms whose bot tokens it has, and none is "
                      "configured: set [telegram] token (or TELEGRAM_BOT_TOKEN) or [discord] token "
                      "(or DISCORD_BOT_TOKEN), the same as the fronts'.")


def role_banner(role: str, adapters: Sequence[str]) -> str:
    """What a front or a worker process says once it runs (``kling-bot run --role``)."""
    if role == "front":
        return (f"kling-bot is running as a front ({', '.join(adapters)}): it answers the chats and "
                "queues their jobs; workers (--role worker) make and deliver them. Ctrl+C stops.")
    return (f"kling-bot is running as a worker ({', '.join(adapters)}): it makes and delivers the "
            "queued jobs of these chats. Ctrl+C stops; its unfinished jobs go to another worker.")


def cannot_read_input(what: str, path: object, why: str) -> str:
    return f"cannot read the {what} {echo(path, PATH_ECHO_LIMIT)}: {why}"


def option_not_with(option: str, needs: str) -> str:
    return f"{option} goes with {needs} only."


# Start-up problems of ``kling-bot run``: one line each, printed after "kling-bot: ".
TELEGRAM_TOKEN_REJECTED = ("Telegram rejected the bot token. Check [telegram] token or "
                           "TELEGRAM_BOT_TOKEN (@BotFather: /mybots > API Token).")
DISCORD_TOKEN_REJECTED = ("Discord rejected the bot token. Check [discord] token or "
                          "DISCORD_BOT_TOKEN (Developer Portal > Bot > Reset Token).")


def cannot_reach(service: str, address: str, setting: str, detail: str) -> str:
    return (f"cannot reach {service} at {address} ({detail}). Check the network "
            f"connection and {setting}.")


def telegram_poller_running(holder: str) -> str:
    return (f"another kling-bot process ({holder}) already polls Telegram for this bot on this "
            "database, and Telegram lets one poller per bot token fetch updates. Stop it, or run "
            "every front in webhook mode ([telegram] webhook_url).")


def telegram_polled_elsewhere(detail: str) -> str:
    return (f"another program polls Telegram for this bot's updates (Telegram answered: {detail}), "
            "and Telegram lets one poller per bot token fetch updates. Stop it, or run every front "
            "in webhook mode ([telegram] webhook_url).")


def telegram_webhook_fronts_run(front: str) -> str:
    return (f"kling-bot processes on this database take this bot's updates by webhook ({front} said so "
            "within a lease), and polling would delete their webhook: they would get nothing more. Start "
            "this one in webhook mode too ([telegram] webhook_url), or stop them and start it a lease "
            "([storage] lease_seconds) later.")


def telegram_poller_blocks_webhook(holder: str) -> str:
    return (f"another kling-bot process ({holder}) polls Telegram for this bot on this database, and a "
            "webhook would end its every getUpdates with 409 Conflict. Stop it first, then start the "
            "webhook fronts.")


def telegram_cannot_listen(listen: str, why: str) -> str:
    return f"cannot listen for Telegram's updates on {listen} ([telegram] webhook_listen): {why}"


def refused_at_start(service: str, detail: str) -> str:
    return f"{service} refused to start the bot: {detail}"


def start_failed(what: str, detail: str) -> str:
    return f"{what} could not start: {detail}"


def simulator_listening(url: str, job_seconds: float) -> str:
    return (f"WaveSpeed simulator listening on {url} (jobs take {job_seconds:g} s). "
            "Point [wavespeed] base_url at it. Ctrl+C stops.")


# --- discord: chat experience (#10) ---

PROMPT_EXAMPLE = "e.g. she waves and smiles"
TYPE_EFFECT_NAME = "Type a name…"
DISCORD_PHOTO_GONE = "I can no longer see that photo. Send it again."
SOURCE_CHANNEL_NOT_ALLOWED = "That photo is from a channel I don't make videos in."
HISTORY_OPTION = "Which video to post again (start typing; leave empty for the list)"


def discord_help_more(balance_text: str) -> str:
    """The end of Discord's /help: the commands added later and the user's credits."""
    return ("**/history** your recent videos, to post one again\n"
            f"Or send me a photo (in a DM, or mentioning me) to pick an effect.\n{balance_text}")


def model_choice(key: str, cost: int, per_seconds: int) -> str:
    """A model choice with its price: ``master (4 credits / 5 s)``."""
    return f"{key} ({credits(cost)} / {per_seconds} s)"


def pick_effect_priced(cost: int, have: int) -> str:
    return f"Pick an effect: each costs {credits(cost)}; you have {have}."


def discord_first_photo(cost: int, have: int) -> str:
    """The answer to a photo sent to the bot (a DM, or a message mentioning it)."""
    return (f"Pick an effect for this photo ({credits(cost)} each; you have {have}). "
            "Or use **/animate** with the photo and a prompt, or **/avatar** with the photo "
            "and a voice clip.")


def discord_effects(titles: Sequence[str]) -> str:
    """/effects on Discord: readable names, and where to pick one."""
    return (f"{len(titles)} effects. Type **/effect** and start typing a name: matching effects "
            f"appear as you type.\n{', '.join(titles)}")


def history_choice(job_id: int, label: str) -> str:
    """One of the user's videos in /history's autocomplete (at most 100 characters)."""
    return echo(f"Job {job_id}: {label}", 100)


# --- telegram: chat experience (#10) ---

TELEGRAM_HOW_TO_START = ("Send me a photo to begin: I'll show you the effects to choose from. "
                         "/help lists everything else.")
TELEGRAM_HELP_MORE = "/history: your recent videos, to post one again"


def telegram_first_photo(cost: int, have: int) -> str:
    """The menu under a photo sent without a command."""
    return f"{FIRST_PHOTO_HINT}\nEffects cost {credits(cost)} each; you have {have}."


def telegram_effects_menu(count: int, cost: int, have: int) -> str:
    """/effects without a photo: tap one, then send the photo."""
    return (f"{count} effects. Tap one, then send the photo it should animate. "
            f"Each costs {credits(cost)}; you have {have}.")


def telegram_send_photo_for(effect: str) -> str:
    return f"{effect}: now send the photo as a reply to this message."


def telegram_history_button(job_id: int, label: str) -> str:
    """A /history button (Telegram shows about 60 characters of it)."""
    return echo(f"▶ Job {job_id}: {label}", 60)


# --- console: chat experience (#10) ---

def console_waiting(job_ids: Sequence[int]) -> str:
    """The demo's input has ended while jobs still run."""
    several = len(job_ids) != 1
    jobs = ", ".join(str(job_id) for job_id in job_ids)
    return (f"Waiting for job{'s' * several} {jobs} to finish; "
            f"Ctrl+C quits without {'them' if several else 'it'}.")


# --- command line: edges (#14) ---

def not_a_bot_api(base_url: str) -> str:
    return (f"[telegram] base_url {base_url} does not answer like a Telegram Bot API server "
            "(no JSON reply); check the address (the default is https://api.telegram.org/bot).")


def simulator_not_local(host: str) -> str:
    return (f"the simulator accepts any API key, so it listens on this computer only: use --host "
            f"127.0.0.1, ::1 or localhost (got {host}).")


def simulator_bad_port(port: int) -> str:
    return f"--port must be 0 to 65535 (got {port}); 0 picks a free port."


def simulator_cannot_listen(host: str, port: int, why: str) -> str:
    return f"the simulator cannot listen on {host}:{port}: {why}."


def output_not_writable(path: object, why: str) -> str:
    return f"cannot save the video to {path}: {why}. Nothing was sent and no credit was used."


def saved_elsewhere(job_id: int, wanted: object, saved: object, why: str) -> str:
    return f"[job {job_id}] could not save the video to {wanted} ({why}); saved it to {saved} instead."


def left_at_wavespeed(job_id: int, dest: object) -> str:
    return (f"Job {job_id} is already at WaveSpeed, so its credits stay reserved: the next "
            f"kling-bot generate or kling-bot run on this database finishes it and saves "
            f"the video to {dest}.")


def finishing_left_jobs(job_ids: Sequence[int]) -> str:
    jobs = ", ".join(str(job_id) for job_id in job_ids)
    return f"Also finishing job{'s' * (len(job_ids) != 1)} {jobs}, left unfinished when generate was stopped."


def wavespeed_unreachable(base_url: str, why: str) -> str:
    return (f"cannot reach WaveSpeed at {base_url} ({why}). Check the network connection and "
            "[wavespeed] base_url. No credit was used.")


NO_CLI_JOBS = "No command-line jobs yet."


def not_a_folder(path: object) -> str:
    return f"{path} is not a folder"


STOPPED_BEFORE_SUBMIT = "stopped before it was sent to WaveSpeed"  # a job's error and ledger note


# --- kling-bot db copy ----------------------------------------------------------------

# What each table the copy moves holds, in the words of its counts.
_COPIED_THINGS = {"users": ("user", "users"), "jobs": ("job", "jobs"),
                  "ledger": ("ledger entry", "ledger entries"), "job_media": ("media file", "media files"),
                  "pending_asks": ("pending question or mark", "pending questions and marks"),
                  "model_listing": ("model listing", "model listings"),
                  "bans": ("ban", "bans"), "bot_state": ("bot-wide setting (a pause)", "bot-wide settings"),
                  "alerts_sent": ("admin alert sent", "admin alerts sent"),
                  "payments": ("payment", "payments")}


def copied_things(table: str, n: int) -> str:
    one, many = _COPIED_THINGS.get(table, (table, table))
    return f"{n} {one if n == 1 else many}"


def copy_counts(counts: dict[str, int], media_bytes: int) -> str:
    """``3 users, 5 jobs, ... (1.2 MB of media)``."""
    return ", ".join(copied_things(table, n) for table, n in counts.items()) + f" ({megabytes(media_bytes)} of media)"


def copy_done(source: str, target: str, counts: str) -> str:
    return f"Copied {counts} from {source} to {target}. Counts checked: the target holds exactly what the source held."


def copy_target_not_empty(target: str, counts: str) -> str:
    return (f"{target} already holds {counts}: add --force to replace everything it holds, "
            "or copy into an empty database.")


def copy_in_use(where: str, jobs: int, until: datetime) -> str:
    return (f"{where} is in use: {jobs} job{'s' * (jobs != 1)} {'are' if jobs != 1 else 'is'} leased by a "
            f"running bot until {until:%H:%M:%S} UTC. Stop that bot first (one that was killed holds its "
            "leases until then); --force does not override this.")


def copy_no_such_file(path: str) -> str:
    return f"no SQLite database at {path}: give the bot's database file, or a postgresql:// URL."


def copy_cannot_open(where: str, why: str) -> str:
    return f"cannot open {where}: {why}"


def copy_same_database(where: str) -> str:
    return f"--from and --to name the same database ({where})."


def copy_media_missing(job_id: int, role: str, path: str, why: str) -> str:
    return (f"job {job_id}'s {role} file {path} cannot be read ({why}); nothing was written to the target. "
            "Put the file back, or delete that job's media row, and copy again.")


def copy_counts_differ(source: str, target: str) -> str:
    return (f"the copy does not match its source: the source holds {source}, the target {target}. "
            "Was a bot running on the source? Stop it and copy again with --force.")


def copy_table_done(table: str, n: int) -> str:
    """A plain progress line (not on a terminal): one per table."""
    return f"copied {copied_things(table, n)}"


def copy_bar(fraction: float, table: str, rows: int, total: int, media_bytes: int, media_total: int) -> str:
    """The progress bar on a terminal: ``[#####.....]  42%  jobs 1200/3000  media 1.2/3.4 MB``."""
    width = 30
    filled = min(width, int(fraction * width))
    return (f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}  {table} {rows}/{total}"
            f"  media {media_bytes / 1024 / 1024:.1f}/{megabytes(media_total)}")


def copy_failed(why: str) -> str:
    return f"the copy broke off and wrote nothing ({why}); run it again."


def store_cannot_open(where: str, why: str) -> str:
    return f"cannot open the database {where}: {why}"


# --- models from the live catalog (#16) ----------------------------------------------

def no_models_now(kind: str) -> str:
    """Every model of a kind is withdrawn or disabled."""
    return f"{KIND_PLURALS.get(kind, kind)} are not available right now: no model for them is on offer."


def takes_no_sound(model: str) -> str:
    return f"{model} makes no sound; ask without sound, or pick a model that does (/models)."


def takes_no_aspect(model: str) -> str:
    return f"{model} follows the photo's shape; leave out the aspect ratio."


def aspect_choices(model: str, allowed: Sequence[str], got: str) -> str:
    return f"{model} makes {_either(allowed)} videos (got {echo(got)})."


def needs_end_image(model: str) -> str:
    return f"{model} needs an end image too: the frame the video ends on."


SCHEMA_WORDS = {"guidance": "guidance", "negative_prompt": "negative prompt", "end_image": "end image",
                "aspect": "aspect ratio", "effect": "effect", "multi_prompt": "multi-shot prompt"}


def schema_refusal(model: str, option: str, rule: str, value: object) -> str:
    """A request the model's own schema refuses, said in the chat's words (never the raw schema error)."""
    what = SCHEMA_WORDS.get(option, option.replace("_", " "))
    if rule == "required":
        return f"{model} needs a {what}."
    if rule == "additionalProperties":
        return f"{model} takes no {what}."
    if rule == "enum" and isinstance(value, list):
        return f"{model} takes {what} {_either(value)}."
    if rule in ("minimum", "exclusiveMinimum"):
        return f"{model} needs a {what} of at least {echo(value)}."
    if rule in ("maximum", "exclusiveMaximum"):
        return f"{model} takes a {what} of at most {echo(value)}."
    if rule == "maxLength":
        return f"{model} takes a {what} of at most {echo(value)} characters."
    return f"{model} does not take that {what}."


def model_line(key: str, nicknames: Sequence[str], title: str, features: Sequence[str], price: str,
               default: bool) -> str:
    """One /models line: ``v3.0-pro (or v3) · Kling v3.0 Pro: sound, up to 15 s · 3 credits per 5 s``."""
    adds = f": {', '.join(features)}" if features else ""
    also = f" (or {', '.join(nicknames)})" if nicknames else ""
    return f"{key}{also}{' (default)' if default else ''} · {title}{adds} · {price}"


def models_list(lines: Sequence[str]) -> str:
    """/models: the models on offer, one per line."""
    return "Models on offer (ask for one by its short name):\n" + "\n".join(lines)


# A job's failure: with_refund adds the refund sentence.
MODEL_WITHDRAWN = "WaveSpeed no longer offers this model, so your video was not started."


# --- #16, Discord part: result buttons of a model no longer offered -------------------------

def model_not_offered(model: str) -> str:
    """A result button of a video whose model is no longer on offer."""
    return f"{model} is no longer offered, so this video cannot be made again; /models lists the models on offer."


# --- #17 http ---
# The operations listener ([http] listen): Prometheus help texts and /readyz's plain answers.
METRIC_HELP = {
    "kling_wavespeed_request_seconds": "Seconds a WaveSpeed HTTP request took, by endpoint (this process)",
    "kling_wavespeed_errors": "WaveSpeed requests that failed, by kind (this process)",
    "kling_webhook_deliveries": "WaveSpeed webhook deliveries received, by outcome (this process)",
    "kling_jobs": "Jobs in the database, by model and state",
    "kling_queue_depth": "Jobs queued, waiting for a WaveSpeed slot",
    "kling_spend_usd": "USD spent on WaveSpeed jobs, by model, as the [spend] caps count it: what WaveSpeed"
                       " charged once known, else the quote",
    "kling_job_failures": "Jobs that ended without a video, by kind of failure",
    "kling_credits_spent": "Credits of delivered videos (reservations committed)",
    "kling_credits_reserved": "Credits held by jobs not yet settled",
    "kling_credits_refunded": "Credits given back for jobs that made no video",
    "kling_credits_granted": "Credits admins added (grant and set)",
    "kling_database_up": "1 when the database answered this scrape, else 0 (its figures are then absent)",
}
READY = "ready"
ALIVE = "ok"


def not_ready(problems: list[str]) -> str:
    """/readyz's answer when something this process needs is not there: one line each."""
    return "not ready:\n" + "\n".join(problems)


def database_not_answering(why: str) -> str:
    return f"database: not answering ({why})"


def platform_not_connected(name: str) -> str:
    return f"{name}: not connected"


def ops_cannot_listen(listen: str, why: str) -> str:
    """``run`` with an ``[http] listen`` address it cannot bind."""
    return f"the operations listener cannot listen on {listen} ([http] listen): {why}"
# --- #17 doctor ---------------------------------------------------------------------------
# `kling-bot doctor`: one line per check, saying what is wrong and how to fix it.


def doctor_line(name: str, ok: bool, text: str) -> str:
    """One check's line: ``ok    [storage] path: ...`` or ``FAIL  [wavespeed] api_key: ...``."""
    return f"{'ok  ' if ok else 'FAIL'}  {name}: {text}"


def doctor_summary(failed: int, total: int) -> str:
    if not failed:
        return f"All {total} checks passed."
    return f"{failed} of {total} checks failed: fix what the FAIL lines say, then run kling-bot doctor again."


def doctor_config_loaded(source: str) -> str:
    return f"{source} loads."


DOCTOR_NO_CONFIG = ("no config file (no --config and no ./config.toml): built-in defaults and the environment "
                    "only; pass --config PATH to check a file.")


def doctor_config_failed(problem: str) -> str:
    return f"{problem} Nothing else was checked: fix the config first."


DOCTOR_DATABASE_FOLDER, DOCTOR_MEDIA_FOLDER, DOCTOR_VIDEO_FOLDER = (
    "the database's folder", "the photo and audio folder", "the video folder")


def doctor_folder_ok(what: str, folder: str, exists: bool) -> str:
    if exists:
        return f"{what} {folder} is writable."
    return f"{what} {folder} can be created (the bot creates it at start)."


def doctor_not_a_folder(path: str) -> str:
    return f"{path} is a file, not a folder"


def doctor_folder_bad(what: str, folder: str, why: str, key: str) -> str:
    return (f"{what} {folder} cannot be written ({why}): make it writable by the user the bot runs as "
            f"(chown/chmod), or point {key} elsewhere.")


def doctor_db_unreachable(where: str, why: str) -> str:
    return (f"cannot open the database {where} ({why}): check [storage] url or path (KLING_DATABASE_URL), "
            "that the server runs and accepts this user and password.")


def doctor_db_unwritable(where: str, why: str) -> str:
    return (f"the database {where} cannot be written ({why}): give the bot's user write access "
            "(the file's owner or mode; in PostgreSQL, GRANT on its tables) or use another database.")


def doctor_db_new(where: str, newest: int) -> str:
    return f"{where} does not exist yet: the bot creates it at start (schema version {newest})."


def doctor_db_cannot_create(where: str) -> str:
    return f"{where} does not exist, and cannot be created until its folder can be written (see [storage] path)."


def doctor_db_ok(where: str, version: int, newest: int) -> str:
    if version == newest:
        return f"{where} is reachable and writable; schema version {version}, the newest."
    return (f"{where} is reachable and writable; schema version {version}, migrated to {newest} "
            "when the bot starts.")


def doctor_db_too_new(where: str, version: int, newest: int) -> str:
    return (f"{where} holds schema version {version}, newer than this kling-bot knows ({newest}): "
            "upgrade kling-bot, or point [storage] at a database of this version.")


DOCTOR_NO_API_KEY = "no API key: set [wavespeed] api_key or WAVESPEED_API_KEY (wavespeed.ai, Access Keys)."


def doctor_bad_key(status: int | None) -> str:
    return (f"bad key: WaveSpeed refused the API key (HTTP {status or 401}): copy a valid key from "
            "wavespeed.ai (Access Keys) into [wavespeed] api_key or WAVESPEED_API_KEY.")


def doctor_no_balance(usd: object) -> str:
    return (f"no balance: the key works, but the account holds ${usd}: top up at wavespeed.ai, "
            "or every video will fail.")


def doctor_balance_ok(usd: object) -> str:
    return f"the key works; the account's balance is ${usd}."


def doctor_unreachable(service: str, where: str, why: str, key: str) -> str:
    return f"cannot reach {service} at {where} ({why}): check this machine's network, DNS and proxy, and {key}."


def doctor_refused(service: str, status: int, detail: str, fix: str) -> str:
    return f"{service} answered HTTP {status} ({detail}): {fix}"


DOCTOR_TRY_LATER = "try again in a minute; if it persists, check the service's status page."
DOCTOR_TELEGRAM_BAD_TOKEN = ("bad token: Telegram refused it: copy the bot's token from @BotFather into "
                             "[telegram] token or TELEGRAM_BOT_TOKEN.")
DOCTOR_TELEGRAM_NOT_FOUND = ("the token is malformed or [telegram] base_url is wrong: copy the token from "
                             "@BotFather, and leave base_url unset unless you run your own Bot API server.")


def doctor_telegram_ok(username: str, user_id: object) -> str:
    return f"logged in as @{username} (id {user_id})."


DOCTOR_DISCORD_BAD_TOKEN = ("bad token: Discord refused it: reset the token on the Bot page of the Developer "
                            "Portal and put it in [discord] token or DISCORD_BOT_TOKEN.")
DOCTOR_DISCORD_NO_APPLICATION = ("the token logs in, but its application cannot be read: use the token of "
                                 "the application's own bot (Developer Portal, Bot page).")


def doctor_discord_ok(username: str, user_id: object, application: str, application_id: object) -> str:
    return f"logged in as {username} (id {user_id}), application {application} (id {application_id})."


def doctor_webhook_ok(url: str, status: int) -> str:
    return f"{url} answers from here (HTTP {status})."


def doctor_webhook_gateway(url: str, status: int, listen_key: str) -> str:
    return (f"{url} answers HTTP {status} from the proxy in front, which does not reach the bot: start the bot, "
            f"and check the proxy forwards to {listen_key}.")


def doctor_webhook_unreachable(url: str, why: str, listen_key: str) -> str:
    return (f"{url} does not answer from here ({why}): check its DNS name and the reverse proxy, "
            f"that the bot runs and listens on {listen_key}.")


def doctor_encoders_ok(names: Sequence[str], library: str) -> str:
    return f"{' and '.join(names)} encoders present ({library})."


def doctor_encoders_missing(names: Sequence[str]) -> str:
    return (f"PyAV has no {' or '.join(names)} encoder, so a video too large for a chat cannot be shrunk: "
            "install PyAV's wheel from PyPI (pip install --force-reinstall av), whose FFmpeg has them.")
# --- #17 stats: /stats, its chart, kling-bot stats, /balance -----------------------------


COMMANDS.update({
    "stats": "What the bot did today and in 7 days, with a chart (admins)",
    "balance": "The WaveSpeed account's balance (admins)",
})
TELEGRAM_FIGURES_ADMINS_ONLY = "Only the bot's admins can see its figures and balance."
TELEGRAM_FIGURES_SENT_PRIVATELY = "I sent it to you in our private chat."
TELEGRAM_FIGURES_NEED_PRIVATE_CHAT = ("Start a private chat with me first (open my profile, press Start),"
                                      " then ask again.")
BALANCE_BAD_KEY = "WaveSpeed refused the bot's API key: set a valid one in [wavespeed] api_key (or WAVESPEED_API_KEY)."
BALANCE_UNAVAILABLE = "WaveSpeed did not tell the balance just now; try again in a minute."
CHART_JOBS_AXIS = "jobs (dark: delivered)"
CHART_SPEND_AXIS = "spend (USD)"
CHART_DAYS_AXIS = "day (UTC, from the credit reset hour)"
STATS_CHART_FILENAME = "kling-stats.png"
CLI_STATS_DAYS = "--days must be 1 to 366."


def cannot_write_chart(path: object, why: str) -> str:
    return f"cannot write the chart to {echo(path, PATH_ECHO_LIMIT)}: {why}"


def chart_title(days: int) -> str:
    return f"Jobs and spend at WaveSpeed, last {day_count(days)}"


def usd(amount: object) -> str:
    """A dollar amount for admins: cents, or finer when the amount has finer digits (to 4)."""
    exact = Decimal(str(amount)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP).normalize()
    exponent = exact.as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"${exact:.{places}f}"


def balance_text(amount: object) -> str:
    """/balance: what is left on the WaveSpeed account."""
    return f"WaveSpeed balance: {usd(amount)}."


def _outcomes(jobs: dict[str, int], total: int) -> str:
    parts = ", ".join(f"{jobs[name]} {name}" for name in ("delivered", "failed", "cancelled", "running"))
    refunded = f"; {jobs['refunded']} refunded" if jobs.get("refunded") else ""
    return f"{total} job{'s' * (total != 1)} ({parts}{refunded})"


def _busiest(who: Sequence[Spender]) -> str:
    return "; ".join(f"{s.name + ' ' if s.name else ''}{s.key}: {s.jobs} job{'s' * (s.jobs != 1)},"
                     f" {usd(s.spend_usd)}" for s in who) or "none"


def _window_lines(title: str, window: Window) -> list[str]:
    failures = ", ".join(f"{kind} {n}" for kind, n in window.failures.items()) or "none"
    return [f"{title}: {_outcomes(window.jobs, window.total)}, {usd(window.spend_usd)} spent at WaveSpeed,"
            f" {credits(window.credits)} spent.",
            f"  Failures: {failures}.",
            f"  Top users: {_busiest(window.top_users)}.",
            f"  Top places: {_busiest(window.top_places)}."]


def stats_text(stats: Stats) -> str:
    """/stats and ``kling-bot stats``: today and the longer span (a ``bot.engine.stats.Stats``)."""
    reset = datetime.fromtimestamp(stats.today.since, UTC).strftime("%H:%M")
    lines = [f"Bot figures (days start at {reset} UTC):",
             *_window_lines("Today", stats.today),
             *_window_lines(f"Last {day_count(stats.window.days)}", stats.window),
             f"Now: {stats.queued} waiting in the queue, {stats.running} being made.",
             *payments_lines(stats)]  # last: a chat's cut of a long text takes the day list first
    return "\n".join(lines)
# --- #17 fakes ---


def telegram_file_over_limit(what: str) -> str:
    """A file Telegram refused to hand over (its size untold in the message): over 20 MB."""
    return f"The {what} is larger than the 20 MB Telegram lets bots download. Send a smaller one."
# --- #17 spend: caps in USD, their admin alerts, prompt rules ----------------------------


PROMPT_BLOCKED = ("This prompt uses words this bot does not accept, so nothing was made and "
                  "nothing was charged. Please write it another way.")
SPEND_CAP_LABELS = {"daily": "The bot's daily spending cap", "daily_place": "This place's daily spending cap",
                    "monthly": "The bot's monthly spending cap"}


def dollars(amount: Decimal) -> str:
    """Dollars as people write them: $1.50, $0.07, $12.00 (cents rounded down: never more than there is)."""
    return f"${amount.quantize(Decimal('0.01'), rounding='ROUND_FLOOR'):,}"


def cap_reset_time(resets_at: datetime, now: datetime | None = None) -> str:
    """When a spending cap resets: today's form within a day, else its date."""
    now = now or datetime.now(UTC)
    if resets_at - now <= timedelta(days=1):
        return reset_time(resets_at, now)
    return f"on {resets_at:%Y-%m-%d} at {resets_at:%H:%M} UTC"


def spend_cap_reached(cap: str, left: Decimal, resets_at: datetime) -> str:
    """A request refused by a [spend] cap, before any cost: what is left and when it resets."""
    return (f"{SPEND_CAP_LABELS[cap]} is reached: {dollars(max(left, Decimal(0)))} is left and this video "
            f"would cost more, so it was not started and nothing was charged. The cap resets "
            f"{cap_reset_time(resets_at)}.")


def spend_alert(cap: str, percent: int, spent: Decimal, limit: Decimal, resets_at: datetime, place: str = "") -> str:
    """To the admins, once per cap, period and level: a [spend] cap is 80% or 100% used."""
    where = f" ({place})" if place else ""
    after = ("New requests are refused until it resets" if percent >= 100
             else "Requests are refused once it is reached; it resets")
    return (f"⚠️ {SPEND_CAP_LABELS[cap]}{where} is {percent}% used: {dollars(spent)} of {dollars(limit)}. "
            f"{after} {cap_reset_time(resets_at)}.")
# --- #17 access: pause, bans, allowances, admin credit commands -----------------------------


def paused(reason: str) -> str:
    """A request while an admin paused the bot."""
    why = f" ({echo(reason)})" if reason else ""
    return f"The bot is paused by its admins{why}. No video can be started right now; please try again later."


def paused_refunded(cost: int, reason: str) -> str:
    """To the owner of a queued job an admin's pause refunded (after "Job N: ")."""
    why = f" ({echo(reason)})" if reason else ""
    return f"not started: the bot was paused by its admins{why}; {credits(cost)} refunded."


CLI_RESUME = "kling-bot resume"  # what ends a pause made on the command line


def now_paused(reason: str, refunded: int, resume: str = "/resume") -> str:
    """The admin's answer to /pause (and the command line's, whose ``resume`` is its own)."""
    why = f" ({echo(reason)})" if reason else ""
    back = f" {refunded} queued job{'s' * (refunded != 1)} refunded." if refunded else \
        f" Queued jobs wait for {resume}; running ones finish."
    return f"Paused{why}: new requests are refused.{back}"


PAUSED_REFUND = "refunded: the bot was paused"  # a job's error and its refund's ledger note
NOW_RESUMED = "Resumed: requests are accepted again and queued jobs start."
NOT_PAUSED = "The bot was not paused."
BANNED = "Sorry, you can't make videos with this bot. If you think this is a mistake, ask its admins."


def now_banned(who: str, already: bool) -> str:
    return f"{echo(who)} was already banned." if already else \
        f"{echo(who)} is banned: their requests are refused and cost nothing."


def now_unbanned(who: str, was: bool) -> str:
    return f"{echo(who)} is no longer banned." if was else f"{echo(who)} was not banned."


def bans_list(bans: Sequence[tuple[str, str, str]]) -> str:
    """``kling-bot users list``: (user key, by, reason) per ban."""
    if not bans:
        return "Nobody is banned."
    return "\n".join(f"{key} banned by {by or 'an admin'}" + (f": {echo(reason)}" if reason else "")
                     for key, by, reason in bans)


def credits_of(who: str, total: int, bonus: int, daily: int, banned: bool, purchased: int = 0) -> str:
    """An admin's look at a user's credits (/credits show, `kling-bot credits show`)."""
    kinds = [f"{bonus} bonus"] * bool(bonus) + [f"{purchased} purchased"] * bool(purchased)
    extra = f" ({', '.join(kinds)})" if kinds else ""
    ban = " They are banned." if banned else ""
    return f"{echo(who)} has {credits(total)}{extra}, with a daily allowance of {daily}.{ban}"


TELEGRAM_ADMIN_COMMAND_ONLY = "Only the bot's admins can do that."
TELEGRAM_BAN_USAGE = "Reply /ban [reason] to a message of the person to ban, or send /ban USER_ID [reason]."
TELEGRAM_UNBAN_USAGE = "Reply /unban to a message of the person, or send /unban USER_ID."
TELEGRAM_SET_USAGE = "Reply /setcredits N to a message of the person, or send /setcredits USER_ID N."
TELEGRAM_CREDITS_USAGE = "Reply /credits to a message of the person, or send /credits USER_ID."
CLI_USER_KEY = "Name the user as platform:id, e.g. telegram:123456 or discord:123456789012345678."

COMMANDS.update({
    "pause": "Pause the bot: refuse new requests, queued jobs wait (admins)",
    "resume": "Resume after /pause (admins)",
    "ban": "Ban a user from making videos (admins)",
    "unban": "Lift a ban (admins)",
    "credits show": "Show a member's credits and daily allowance",
})
OPTIONS.update({
    "pause reason": "Why (shown to whoever asks meanwhile)",
    "pause refund": "Also cancel and refund every queued job",
    "ban member": "Who",
    "ban reason": "Why (kept for the admins)",
})


# --- #17 review ---

def doctor_db_busy(where: str, version: int, newest: int) -> str:
    """A SQLite file another process keeps write-locked: busy, not unwritable (the bot waits its turn)."""
    schema = "the newest" if version == newest else f"migrated to {newest} when the bot starts"
    return (f"{where} is reachable; schema version {version}, {schema}; another process holds its write lock, "
            "so writing was not tried (the bot waits its turn; if this lasts, look for a long transaction, "
            "e.g. an open sqlite3 shell).")


# Why doctor finds a database unusable (bot/store/health.py), inside its database lines.
DB_IS_A_FOLDER = "IsADirectoryError: a folder, not a database file"
DB_SERVER_READ_ONLY = ("the server takes no writes (transaction_read_only is on: a standby, or "
                       "default_transaction_read_only)")
DB_NO_CREATE_PRIVILEGE = "no CREATE privilege on the schema, where the tables go"


def db_no_write_privilege(tables: Sequence[str]) -> str:
    return f"no write privilege on {', '.join(tables)}"


def no_database(path: str) -> str:
    """An operator command (``stats``, ``pause``, ``users``, ``credits``) on a SQLite path
    where no database is (none is made)."""
    return (f"no database at {echo(path, PATH_ECHO_LIMIT)}: check [storage] path (or --config); "
            "the bot creates it when it first runs.")


# --- #17 attack3 (access) ---

# /ban aimed at whom a ban would not stop: the bot (or another bot), or one of the admins
# (their admin commands take no notice of a ban, and they could lift it themselves).
BAN_A_BOT = "That is a bot: it makes no requests to ban."


def ban_an_admin(platform_section: str) -> str:
    return f"That is one of the bot's admins: take them out of [{platform_section}] admins first."
# --- payments (#18 stats) ----------------------------------------------------------------

if TYPE_CHECKING:
    from bot.engine.stats import PaymentLine
    from bot.store.activity import PaymentCounts

METRIC_HELP.update({
    "kling_payments": "Purchases credited (Telegram Stars, Discord consumables), by platform",
    "kling_payment_refunds": "Purchases refunded (by an admin or the platform), by platform",
    "kling_credits_purchased": "Credits bought with payments",
    "kling_credits_taken_back": "Purchased credits that refunds removed (what was already spent stays spent)",
    "kling_stars_received": "Telegram Stars received for purchases (refunded ones included)",
})


def payment_figures(counts: PaymentCounts) -> str:
    """A span's purchases and refunds, for /stats and ``kling-bot stats``."""
    if not counts.purchases and not counts.refunds:
        return "none"
    said = []
    if counts.purchases:
        where = "; ".join([f"{counts.telegram} with {counts.stars} Telegram Stars"] * bool(counts.telegram)
                          + [f"{counts.discord} on Discord"] * bool(counts.discord))
        said.append(f"{counts.purchases} purchase{'s' * (counts.purchases != 1)}"
                    f"{f' ({where})' if where else ''}, {credits(counts.credits)} bought")
    if counts.refunds:
        short = f", {counts.short} short (spent before the refund)" if counts.short else ""
        said.append(f"{counts.refunds} refund{'s' * (counts.refunds != 1)}, "
                    f"{credits(counts.taken_back)} taken back{short}")
    return "; ".join(said)


def payments_lines(stats: Stats) -> list[str]:
    """/stats' payments: today, the longer span, and each day of it that had any."""
    lines = [f"Payments today: {payment_figures(stats.today.payments)}.",
             f"Payments, last {day_count(stats.window.days)}: {payment_figures(stats.window.payments)}."]
    if stats.window.days > 1:
        lines += [f"  {day.day}: {payment_figures(day.payments)}." for day in stats.daily[-stats.window.days:]
                  if day.payments.purchases or day.payments.refunds]
    return lines


def _utc(moment: float) -> str:
    return f"{datetime.fromtimestamp(moment, UTC):%Y-%m-%d %H:%M} UTC"


def payment_line(payment: PaymentLine) -> str:
    """``kling-bot payments list``: one payment on one line (its key is what /refund takes)."""
    if payment.credits == 0 and payment.refunded_at is not None:  # its refund came first: it never credited
        by = f" by {payment.refunded_by}" if payment.refunded_by else ""
        return (f"{_utc(payment.at)}  {payment.platform}  {payment.user_key}  key {payment.key}"
                f"  refunded{by} before it was credited: nothing credited, nothing taken back")
    price = (f"{payment.stars} Stars" if payment.stars is not None
             else f"SKU {payment.sku_id}" if payment.sku_id else "no price recorded")
    if payment.refunded_at is None:
        refund = "not refunded"
    else:
        by = f" by {payment.refunded_by}" if payment.refunded_by else ""
        short = f", {payment.short} short" if payment.short else ""
        refund = f"refunded {_utc(payment.refunded_at)}{by}: {credits(payment.taken_back)} taken back{short}"
    return (f"{_utc(payment.at)}  {payment.platform}  {payment.user_key}  {echo(payment.pack)}:"
            f" {credits(payment.credits)}, {price}  key {payment.key}  {refund}")


def payments_list_text(payments: Sequence[PaymentLine], days: int, user_key: str | None) -> str:
    """``kling-bot payments list``: a line per payment, newest first, or that there is none."""
    if not payments:
        whose = f" of {user_key}" if user_key else ""
        return f"No payments{whose} in the last {day_count(days)}."
    return "\n".join(payment.text() for payment in payments)


# --- payments (#18 core) ---

def balance_with_purchased(daily_left: int, bonus: int, purchased: int, resets_at: datetime,
                           now: datetime | None = None, *, allowance: int | None = None) -> str:
    """/quota of a user who bought credits: the daily ones (they reset) and the purchased ones (they stay)."""
    total = daily_left + bonus + purchased
    extra = f", {bonus} bonus" if bonus else ""
    to = f" to {allowance}" if allowance is not None else ""
    return (f"You have {credits(total)}: {daily_left} daily{extra} and {purchased} purchased. "
            f"Daily credits reset{to} {reset_time(resets_at, now)}; purchased credits never expire.")


def or_buy(refusal: str) -> str:
    """An out-of-credits answer where the platform sells credit packs."""
    return f"{refusal} Or /buy credits."


BUY_NOTHING = "Credits are not for sale here."
BUY_ELSEWHERE = "Credits are bought in the bot on Telegram (Stars) or Discord (the app's store), not here."
BUY_HEADER = "Credit packs (purchased credits never expire; they are spent after your daily and bonus ones):"


def buy_line(name: str, credits_in_pack: int, stars: int | None = None) -> str:
    """A pack on /buy: with its price in Stars on Telegram (Discord's button shows its own price)."""
    price = f" for {stars} Star{'s' * (stars != 1)}" if stars is not None else ""
    return f"- {echo(name)}: {credits(credits_in_pack)}{price}"


def buy_list(lines: Sequence[str]) -> str:
    return "\n".join([BUY_HEADER, *lines])


def pack_description(credits_in_pack: int) -> str:
    """The invoice's description of a pack."""
    return f"{credits(credits_in_pack)} for making videos. Purchased credits never expire."


def purchase_credited(pack: str, credits_in_pack: int, total: int) -> str:
    return f"Thank you! {echo(pack)} added {credits(credits_in_pack)}: you now have {credits(total)}."


# Pre-checkout refusals (Telegram shows them to the buyer; nothing is charged).
PAYMENT_NOT_OURS = "This invoice is not one of this bot's: nothing was charged."
PACK_GONE = "This pack is no longer sold: nothing was charged. Send /buy for the current packs."
PACK_CHANGED = "This pack changed since the invoice was made: nothing was charged. Send /buy for a new invoice."
PAYMENT_WRONG_CURRENCY = "Credits are paid in Telegram Stars only: nothing was charged."
PAYMENT_WRONG_AMOUNT = "The amount does not match the pack's price: nothing was charged. Send /buy for a new invoice."
PAYMENT_BANNED = "Sorry, you can't buy credits with this bot. If you think this is a mistake, ask its admins."
PAYSUPPORT = "For help with a payment, write to the bot's admins (say when you paid and which pack)."


# A payment taken but not credited as its invoice said (the buyer's Stars are gone either way).
PAYMENT_NOT_CREDITED = ("Your payment went through, but I could not tell which pack it was for, so no credits "
                        "were added. The admins were told and will sort it out; /paysupport for help.")
CHARGE_ECHO_LIMIT = 200  # a charge key in an admin's message: whole (Telegram's run past 128; copied into /refund)


def payment_not_saved(charge_id: str) -> str:
    """To the buyer: paid, but the credit could not be written (the database failed)."""
    return ("Your payment went through, but I could not add the credits just now. The admins were told; "
            "if the credits do not appear soon, send /paysupport with this charge id: "
            f"{echo(charge_id, CHARGE_ECHO_LIMIT)}")


def payment_not_credited(key: str, user_key: str, paid: int, currency: str) -> str:
    """To the admins: a payment taken that the bot did not credit (an invoice it cannot read,
    or a failed write): credit the buyer by hand or refund the charge at Telegram."""
    return (f"Payment {echo(key, CHARGE_ECHO_LIMIT)} of {echo(user_key)} ({paid} {echo(currency, 8)}) was "
            "taken but NOT credited: add the credits by hand or refund it.")


def payment_mismatch(key: str, user_key: str, paid: int, currency: str, invoice_stars: int) -> str:
    """To the admins: a payment whose amount or currency is not its invoice's (credited as the invoice said)."""
    return (f"Payment {echo(key, CHARGE_ECHO_LIMIT)} of {echo(user_key)} paid {paid} {echo(currency, 8)} for an "
            f"invoice of {invoice_stars} XTR; it was credited as the invoice promised. Check the packs.")


def refund_not_applied(key: str, user_key: str, by: str) -> str:
    """To the admins: the platform refunded a payment, but its credits could not be taken back (the database failed)."""
    return (f"{by.capitalize()} refunded payment {echo(key, CHARGE_ECHO_LIMIT)} of {echo(user_key)}, but its "
            "credits could NOT be taken back (the database failed): take them back by hand.")


def refund_unknown(key: str) -> str:
    return f"No payment {echo(key, CHARGE_ECHO_LIMIT)} is known: nothing was refunded."


def refund_already(key: str) -> str:
    return f"Payment {echo(key, CHARGE_ECHO_LIMIT)} was refunded already: nothing changed."


def refund_done(key: str, user_key: str, removed: int, short: int, by: str) -> str:
    """A refund applied: the credits taken back, and in words the ones already spent (never below zero)."""
    who = {"telegram": " by Telegram", "discord": " by Discord"}.get(by, "")
    text = f"Payment {echo(key, CHARGE_ECHO_LIMIT)} of {echo(user_key)} refunded{who}: {credits(removed)} taken back."
    if short:
        text += (f" {credits(short)} of it had been spent already and could not be taken back"
                 " (credits never go below zero).")
    return text


def refund_unknown_by_platform(key: str, by: str) -> str:
    """The platform refunded a payment this bot never credited."""
    return (f"{by.capitalize()} refunded payment {echo(key, CHARGE_ECHO_LIMIT)}, which this bot never credited:"
            " nothing changed.")


# --- #18 telegram (adapters/telegram/payments.py) ---

COMMANDS.update({
    "paysupport": "Help with a payment",  # buy and refund: with Discord's, below (one wording for both)
})
TELEGRAM_HELP_BUY = "/buy: more credits, paid in Telegram Stars · /paysupport: help with a payment"
TELEGRAM_REFUND_USAGE = ("Reply /refund to a message of the buyer (their latest payment), "
                         "or send /refund CHARGE_ID (the payment's Telegram charge id).")
TELEGRAM_REFUND_NO_PAYMENT = "That user has no payment left to refund."


def telegram_pack_button(name: str, credits: int, stars: int) -> str:
    """A /buy button: the pack, what it adds and its price."""
    return f"{name}: {credits} credit{'s' * (credits != 1)} for {stars} ⭐"


def telegram_refund_reply(text: str, stars: int) -> str:
    """/refund on Telegram: the engine's account of the refund, then where the money went."""
    return f"{text}\nTelegram returned the {stars} Star{'s' * (stars != 1)} to the buyer."


def telegram_refund_refused(error: str) -> str:
    """Telegram refused refundStarPayment: nothing was changed."""
    return f"Telegram refused the refund ({echo(error, 200)}); nothing was changed."


# --- #18 discord (payments: /buy, /refund on Discord) ---

COMMANDS.update({
    "buy": "Buy credits",
    "refund": "Refund a payment: take its credits back (admins)",
})
OPTIONS.update({
    "refund payment": "The payment's entitlement id",
    "refund user": "Refund this member's latest payment",
})
DISCORD_REFUND_WHICH = "Name the payment (its entitlement id) or the member whose latest payment to refund."
DISCORD_PAYMENT_ID_INVALID = "A Discord payment is named by its entitlement id, digits only."
# Discord's API can consume and list entitlements, not pay money back: its support does.
DISCORD_MONEY_BACK = ("Discord returns the money only through its own support "
                      "(the buyer asks at support.discord.com): this took the credits back in the bot.")


def no_payment_to_refund(who: str) -> str:
    return f"{who} has no payment to refund."


def discord_refund_reply(text: str) -> str:
    """/refund on Discord: the engine's account of the refund, then who returns the money."""
    return f"{text}\n{DISCORD_MONEY_BACK}"
# --- #18 attack (payments' money): a refund's credits held by jobs not yet ended ---

def refund_held(held: int) -> str:
    """Of a refunded payment's credits, those jobs not yet ended hold: not spent yet."""
    return (f"{credits(held)} of it are held by jobs not yet ended: taken back if those jobs are refunded,"
            " spent if they are delivered.")

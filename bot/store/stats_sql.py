"""The queries behind ``Store.daily_stats``, in one text for both backends.

Each is written with ``{since}``/``{until}``/``{offset}`` placeholders that a backend fills
with its own parameter marks (SQLite ``?`` in order, PostgreSQL ``$n``), and ``{day}``
with its way of flooring a moment (``{day}`` a job's created_at, ``{paid_day}`` a payment's
``at``, ``{refund_day}`` its refunded_at) to its credit period. ``bot.store.activity`` folds
the rows they give.
"""

from __future__ import annotations

from bot.store.interface import SPEND_OF_JOB, UNQUOTED_CREDITS_OF_JOB

_WINDOW = "created_at >= {since} and created_at < {until}"
_REFUNDED = "(settlement = 'refunded')"
# Each job's spend as the caps count it (``Store.spend_usd``): grouped by its amount, with
# the credits of the unquoted ones summed (``activity.fold_*`` price them at credit_usd).
_SPEND = f"{SPEND_OF_JOB} as usd, sum({UNQUOTED_CREDITS_OF_JOB}) as unquoted"

DAYS = (f"select {{day}} as day, state, {_REFUNDED} as refunded, {_SPEND},"
        f" count(*) as jobs, sum(cost) as credits from jobs where {_WINDOW}"
        f" group by 1, state, 3, 4")
USERS = (f"select user_key as key, {_SPEND}, count(*) as jobs"
         f" from jobs where {_WINDOW} group by user_key, 2")
PLACES = (f"select place_key as key, {_SPEND}, count(*) as jobs"
          f" from jobs where {_WINDOW} and place_key is not null and place_key != ''"
          f" group by place_key, 2")
FAILURES = ("select coalesce(failure, case when state = 'cancelled' then 'cancelled' else 'other' end) as kind,"
            f" count(*) as jobs from jobs where {_WINDOW}"
            " and (failure is not null or state in ('failed', 'cancelled')) group by 1")
# Every job (``/metrics``), grouped as DAYS is, by model instead of day.
MODELS = (f"select model_id, state, {_SPEND}, count(*) as jobs"
          f" from jobs group by model_id, state, 3")
NOW = "select state, count(*) as jobs from jobs where state in ({active}) group by state"
# Payments (#18) by day and platform: purchases on the day they were credited, refunds on
# the day they were made; one shape for both, so ``activity.fold_days`` adds them up. A row
# of 0 credits is a platform's refund of a charge never credited (kept so that its late
# payment credits nothing): neither a purchase nor a refund of one (``CREDITED``).
CREDITED = "credits > 0"  # a payment that credited its pack
PAYMENTS = ("select {paid_day} as day, platform, count(*) as purchases, sum(credits) as credits,"
            " coalesce(sum(stars), 0) as stars, 0 as refunds, 0 as taken_back, 0 as short"
            " from payments where at >= {since} and at < {until} and " + CREDITED + " group by 1, platform"
            " union all"
            " select {refund_day} as day, platform, 0, 0, 0, count(*), coalesce(sum(refunded_credits), 0),"
            " coalesce(sum(refund_short), 0)"
            " from payments where refunded_at >= {since} and refunded_at < {until} and " + CREDITED
            + " group by 1, platform")
# Payments one by one, newest first (``kling-bot payments list``); ``{user}`` '' for everyone's.
PAYMENT_LIST = ("select key, platform, user_key, pack, credits, stars, sku_id, at, consumed_at, refunded_at,"
                " refunded_credits, refund_short, refunded_by from payments"
                " where at >= {since} and ({user} = '' or user_key = {user}) order by at desc, key desc")

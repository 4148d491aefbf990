"""The queries behind ``Store.daily_stats``, in one text for both backends.

Each is written with ``{since}``/``{until}``/``{offset}`` placeholders that a backend fills
with its own parameter marks (SQLite ``?`` in order, PostgreSQL ``$n``), and ``{day}``
with its way of flooring a moment to its credit period. ``bot.store.activity`` folds
the rows they give.
"""

from __future__ import annotations

_WINDOW = "created_at >= {since} and created_at < {until}"
_REFUNDED = "(settlement = 'refunded')"

DAYS = (f"select {{day}} as day, state, {_REFUNDED} as refunded, quote_usd, charged_usd,"
        f" count(*) as jobs, sum(cost) as credits from jobs where {_WINDOW}"
        f" group by 1, state, 3, quote_usd, charged_usd")
USERS = (f"select user_key as key, {_REFUNDED} as refunded, quote_usd, charged_usd, count(*) as jobs"
         f" from jobs where {_WINDOW} group by user_key, 2, quote_usd, charged_usd")
PLACES = (f"select place_key as key, {_REFUNDED} as refunded, quote_usd, charged_usd, count(*) as jobs"
          f" from jobs where {_WINDOW} and place_key is not null and place_key != ''"
          f" group by place_key, 2, quote_usd, charged_usd")
FAILURES = ("select coalesce(failure, case when state = 'cancelled' then 'cancelled' else 'other' end) as kind,"
            f" count(*) as jobs from jobs where {_WINDOW}"
            " and (failure is not null or state in ('failed', 'cancelled')) group by 1")
# Every job (``/metrics``), grouped as DAYS is, by model instead of day.
MODELS = (f"select model_id, state, {_REFUNDED} as refunded, quote_usd, charged_usd, count(*) as jobs"
          f" from jobs group by model_id, state, 3, quote_usd, charged_usd")
NOW = "select state, count(*) as jobs from jobs where state in ({active}) group by state"

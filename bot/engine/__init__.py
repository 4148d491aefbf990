"""The job engine: ``Engine`` (intake.py) is the facade adapters use.

scheduler.py runs the durable queue; pipeline.py drives one job through WaveSpeed;
couriers.py calls the adapters back.
"""

from bot.engine.intake import Engine
from bot.engine.joblog import logged_job_id  # which job a log line is about, for the JSON log
from bot.payments import (  # what an adapter hands the engine and gets back about payments (#18)
    STARS,
    Credited,
    PaymentRefund,
    Purchase,
    discord_key,
    invoice_payload,
    payload_promise,
    telegram_key,
)
from bot.spend import place_key_of  # the place a request's spend counts to, for an adapter's precheck
from bot.store import (
    StoreOffline,  # a store write that could not reach the database (a payment retries it)
    StoreUnavailable,  # what Engine.from_settings raises when the store cannot open
)

__all__ = ["STARS", "Credited", "Engine", "PaymentRefund", "Purchase", "StoreOffline", "StoreUnavailable",
           "discord_key", "invoice_payload", "logged_job_id", "payload_promise", "place_key_of", "telegram_key"]

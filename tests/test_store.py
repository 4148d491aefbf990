from __future__ import annotations

from bot.config import QuotaSettings
from bot.credits import Credits
from bot.store import MIGRATIONS, Store
from tests.conftest import user


def test_reopening_keeps_data_and_runs_each_migration_once(tmp_path):
    path = tmp_path / "bot.sqlite"
    store = Store(path)
    with store.transaction():
        Credits(store, QuotaSettings()).reserve(user(), 3)
    store.close()

    again = Store(path)
    assert again.schema_version == len(MIGRATIONS)
    assert again.db["users"].get(user().key)["daily_left"] == 7
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failed_transaction_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path / "bot.sqlite")
    quota = Credits(store, QuotaSettings())
    try:
        with store.transaction():
            quota.reserve(user(), 3)
            raise RuntimeError("crash between the reservation and the job row")
    except RuntimeError:
        pass
    assert quota.balance(user()).total == 10


def test_unanswered_asks_expire_after_a_day(tmp_path):
    store = Store(tmp_path / "bot.sqlite")
    store.put_ask("telegram", 1, 10, {"prompt": "old"}, now=1000.0)
    store.put_ask("telegram", 1, 11, {"prompt": "new"}, now=1000.0 + 25 * 3600)
    assert store.ask("telegram", 1, 10) is None
    assert store.ask("telegram", 1, 11) == {"prompt": "new"}

from __future__ import annotations

import compileall
from dataclasses import replace
from pathlib import Path

import pytest

from bot.catalog import Params
from bot.config import load_settings
from bot.devtools.simulator import Simulator
from bot.engine import Engine
from bot.jobs import GenerationRequest, Press, UserRef
from bot.store import is_postgres_url
from tests import spec_check
from tests.helpers import RecordingCourier, image_bytes
from tests.postgres import (  # noqa: F401  (fixtures: a PostgreSQL server and a store per backend)
    empty_storage_url,
    pg_server,
    pg_server_session,
    pg_url,
    storage_url,
)

API_KEY = "ws-test-key-DO-NOT-LEAK-7f3a"
PLATFORM = "test"


BACKENDS = ["sqlite", "postgresql"]


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # once, in the process that starts the test workers
        # The suite starts hundreds of `kling-bot` processes; where PYTHONDONTWRITEBYTECODE is
        # set (as on the machine the suite is timed on) each would compile the sources anew,
        # a quarter of its start.
        for package in ("bot", "adapters"):
            compileall.compile_dir(Path(__file__).parent.parent / package, quiet=1)
    config.addinivalue_line("markers", "both_backends: the module's tests that use the `database` fixture"
                                       " (directly, or through `settings` and the engines) run on SQLite and on"
                                       " PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The one place tests are run on both backends: in a module marked
    ``pytestmark = pytest.mark.both_backends``, every test whose fixtures reach
    ``database`` runs once per backend; elsewhere ``database`` is a SQLite file."""
    if "database" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("database", BACKENDS, indirect=True)


@pytest.fixture
async def database(request: pytest.FixtureRequest, tmp_path) -> str:
    """Where this test's store lives, as ``[storage]`` takes it: a SQLite file path, or
    (the "postgresql" variant of a ``both_backends`` test) the URL of a fresh migrated
    database of its own on the suite's PostgreSQL server (tests/postgres.py)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return str(tmp_path / "bot.sqlite")
    server = request.getfixturevalue("pg_server")
    return await server.create_database(migrated=True)


@pytest.fixture
async def make_store(database):
    """Open stores on this test's database (each one its own connections, like another
    process; ``make_store(url)`` for another database); all closed after the test."""
    from bot.store import open_store
    opened = []

    async def open_(url: str | None = None):
        store = await open_store(url or database)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture(autouse=True)
def chat_traffic_follows_the_specs():
    """After every test, no fake chat server may have received a request the real service
    refuses or ignores (tests/spec_check.py), even if the client swallowed the error."""
    spec_check.forget_watched()
    yield
    violations = spec_check.watched_violations()
    spec_check.forget_watched()
    assert not violations, "requests the real chat API refuses:\n" + "\n".join(violations)


@pytest.fixture
async def simulator():
    sim = Simulator(job_seconds=0.3, api_key=API_KEY, video_seconds=1.0)
    await sim.start()
    yield sim
    await sim.close()


@pytest.fixture
def settings(tmp_path, simulator, database):
    base = load_settings(None, env={})
    base = base.with_wavespeed(base_url=simulator.base_url, api_key=API_KEY,
                               poll_interval=0.05, job_timeout=20.0, max_concurrent=2,
                               history_settle=0.3)
    # A polling bot's start-up check for another poller (2 s by default) is tested in
    # tests/test_telegram_webhook.py; elsewhere it would only slow every start.
    on_postgres = is_postgres_url(database)
    return replace(base, storage=replace(base.storage, path=str(tmp_path / "bot.sqlite"),
                                         url=database if on_postgres else "",
                                         videos_dir=str(tmp_path / "videos"), lease_seconds=2.0),
                   telegram=replace(base.telegram, conflict_check_seconds=0.0))


@pytest.fixture
def courier():
    return RecordingCourier()


@pytest.fixture
async def make_engine(settings, courier):
    """Build and start engines (optionally with changed settings); all are closed after."""
    engines = []

    async def make(custom=None, *, start=True, **wavespeed):
        chosen = custom or settings
        if wavespeed:  # e.g. max_concurrent=1
            chosen = chosen.with_wavespeed(**wavespeed)
        engine = await Engine.from_settings(chosen)
        engine.register(PLATFORM, courier)
        if start:
            await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()


@pytest.fixture
async def engine(make_engine):
    return await make_engine()


def user(n: int | str = 1) -> UserRef:
    return UserRef(PLATFORM, str(n), f"user{n}")


def press(who: UserRef, place: str = "", *, on_its_message: bool = True) -> Press:
    """A result button pressed by ``who`` in ``place`` (the jobs here answer in place "")."""
    return Press.of_button(who, place, carried=on_its_message)


def effect_request(effect: str = "hula", who: UserRef | None = None, **kw) -> GenerationRequest:
    image = kw.pop("image") if "image" in kw else image_bytes()
    return GenerationRequest(who or user(), "effect", image,
                             Params(effect=effect), reply_to={"chat": 42}, **kw)


@pytest.fixture
async def adapter_runner():
    """Start an engine with a chat adapter; both are stopped after the test."""
    running = []

    async def start(settings, adapter_class, launch: str = "start"):
        engine = await Engine.from_settings(settings)
        adapter = adapter_class(settings, engine)
        await engine.start()
        await getattr(adapter, launch)()
        running.append((engine, adapter))
        return engine, adapter

    yield start
    for engine, adapter in running:
        await adapter.stop()
        await engine.close()

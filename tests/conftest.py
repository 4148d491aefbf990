from __future__ import annotations

from dataclasses import replace

import pytest

from bot.catalog import Params
from bot.config import load_settings
from bot.devtools.simulator import Simulator
from bot.engine import Engine
from bot.jobs import GenerationRequest, Press, UserRef
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
def settings(tmp_path, simulator):
    base = load_settings(None, env={})
    base = base.with_wavespeed(base_url=simulator.base_url, api_key=API_KEY,
                               poll_interval=0.05, job_timeout=20.0, max_concurrent=2,
                               history_settle=0.3)
    # A polling bot's start-up check for another poller (2 s by default) is tested in
    # tests/test_telegram_webhook.py; elsewhere it would only slow every start.
    return replace(base, storage=replace(base.storage, path=str(tmp_path / "bot.sqlite"),
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

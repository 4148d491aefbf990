"""#16 from the command line, as whole processes: `kling-bot generate` with a model only
WaveSpeed's live list has (its options reaching the submit body under its own names), o1's
end image going out as `last_image`, refusals at no cost, `kling-bot models`, the demo, and
the help texts. Against `--simulate` (the simulator inside the process: its saved MP4, its
database) and against the tests' own simulator (its submit bodies), found through the config."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from adapters import app
from bot import messages
from bot.config import load_settings
from bot.engine import Engine
from bot.store import open_store
from tests.conftest import API_KEY
from tests.helpers import image_bytes, mp4_info

ROOT = Path(__file__).resolve().parent.parent
V3 = "kwaivgi/kling-v3.0-pro/image-to-video"
O1 = "kwaivgi/kling-video-o1-std/image-to-video"
ENABLED = '["kwaivgi/kling-effects", "kwaivgi/kling-v2.1-*", "*v3.0-pro*", "*o1-std*", "*v2.5-turbo-pro*"]'
SIMULATED_DB = "kling-bot-simulated.sqlite"  # where --simulate keeps its jobs (the default path's twin)
DAILY = 10


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "WAVESPEED_API_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def kling(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=_env())


async def kling_async(*args: str, cwd: Path) -> tuple[int, str, str]:
    """A kling-bot process while this test's event loop goes on serving the simulator."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "adapters", *args, cwd=cwd, env=_env({"WAVESPEED_API_KEY": API_KEY}),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def folder(tmp_path) -> Path:
    """A working folder with a photo, an end frame, and a config offering the newer models."""
    (tmp_path / "me.jpg").write_bytes(image_bytes(800, 600))
    (tmp_path / "end.png").write_bytes(image_bytes(800, 600, "PNG"))
    (tmp_path / "config.toml").write_text(f"[models]\nenabled = {ENABLED}\n")
    return tmp_path


@pytest.fixture
def against_simulator(folder, simulator) -> Path:
    """The config pointed at the tests' simulator (its submissions are seen here)."""
    (folder / "config.toml").write_text(
        f'[wavespeed]\nbase_url = "{simulator.base_url}"\npoll_interval = 0.1\n'
        f'[storage]\npath = "bot.sqlite"\nvideos_dir = "videos"\n'
        f"[models]\nenabled = {ENABLED}\n")
    return folder


async def _stored_job(path: Path, job_id: int = 1):
    store = await open_store(str(path))
    try:
        return await store.job(job_id)
    finally:
        await store.close()


async def _credits_of_cli_user(path: Path) -> int:
    base = load_settings(None, env={})
    engine = await Engine.from_settings(replace(base, storage=replace(base.storage, path=str(path))))
    try:
        return (await engine.balance(app.cli_user())).total
    finally:
        await engine.close()


# --- 1 + 4: a live-only model end to end ----------------------------------------------------------

async def test_generate_simulated_makes_a_live_only_model_with_its_options(folder):
    rc, out, err = await kling_async("generate", "me.jpg", "--prompt", "a cat dances", "--model", "v3",
                                     "--duration", "12", "--sound", "--aspect", "9:16", "--simulate",
                                     "-o", "out.mp4", cwd=folder)
    assert rc == 0, err
    assert out.strip() == "out.mp4"
    assert mp4_info((folder / "out.mp4").read_bytes())[0] == "h264"
    job = await _stored_job(folder / SIMULATED_DB)
    assert job.model_id == V3
    assert job.inputs == {"prompt": "a cat dances", "duration": 12, "sound": True, "aspect_ratio": "9:16"}
    # $0.56 per 5 s x 12 s x 1.5 with sound = $2.016 -> 9 credits of $0.25
    assert job.quote_usd == Decimal("2.016") and job.cost == 9
    assert await _credits_of_cli_user(folder / SIMULATED_DB) == DAILY - 9
    listed = kling("jobs", "--simulate", cwd=folder)
    assert listed.returncode == 0 and "Job 1 (v3.0-pro: a cat dances): done" in listed.stdout


def test_generate_takes_a_models_full_wavespeed_id(folder):
    done = kling("generate", "me.jpg", "--prompt", "a cat", "--model", V3, "--duration", "3", "--simulate",
                 "-o", "id.mp4", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "Job 1 (v3.0-pro: a cat): done" in kling("jobs", "--simulate", cwd=folder).stdout


async def test_generate_sends_a_live_only_models_options_under_its_own_names(against_simulator, simulator):
    rc, out, err = await kling_async("generate", "me.jpg", "--prompt", "a cat dances", "--model", "v3",
                                     "--duration", "12", "--sound", "--aspect", "9:16", "-o", "out.mp4",
                                     cwd=against_simulator)
    assert rc == 0, err
    assert mp4_info((against_simulator / "out.mp4").read_bytes())[0] == "h264"
    [submission] = simulator.submissions
    assert submission["model"] == V3
    body = submission["body"]
    assert set(body) == {"image", "prompt", "duration", "sound", "aspect_ratio"}
    assert type(body["duration"]) is int and body["duration"] == 12
    assert body["sound"] is True and body["aspect_ratio"] == "9:16"
    assert await _credits_of_cli_user(against_simulator / "bot.sqlite") == DAILY - 9


async def test_o1s_end_image_goes_out_as_last_image(against_simulator, simulator):
    rc, _, err = await kling_async("generate", "me.jpg", "--prompt", "zoom out", "--model", "o1",
                                   "--end-image", "end.png", "--duration", "3", "-o", "o1.mp4",
                                   cwd=against_simulator)
    assert rc == 0, err
    [submission] = simulator.submissions
    assert submission["model"] == O1
    body = submission["body"]
    assert "last_image" in body and "end_image" not in body
    token = body["last_image"].split("/media/")[1].split("/")[0]
    assert simulator.uploads[token][0] == (against_simulator / "end.png").read_bytes()
    assert body["duration"] == 3


# --- 2: refused before anything is sent, at no cost ----------------------------------------------------

@pytest.mark.parametrize(("options", "refusal"), [
    (["--model", "v3", "--duration", "20"], "Duration must be from 3 to 15 seconds (got 20)."),
    (["--model", "v3", "--aspect", "4:3"], "Kling v3.0 Pro Image-to-Video makes 16:9 or 9:16 or 1:1 videos (got 4:3)."),
    (["--model", "turbo", "--end-image", "end.png"], "Only the 'v3.0-pro' or 'o1-std' model takes an end image."),
    (["--model", "turbo", "--sound"], "Kling v2.5 Turbo Pro Image-to-Video makes no sound; ask without sound, "
                                      "or pick a model that does (/models)."),
    (["--model", "v2.1", "--duration", "7"], "Duration must be 5 or 10 seconds (got 7)."),
])
async def test_generate_refuses_what_the_model_does_not_take_at_no_cost(
        against_simulator, simulator, options, refusal):
    rc, out, err = await kling_async("generate", "me.jpg", "--prompt", "a cat", *options, "-o", "x.mp4",
                                     cwd=against_simulator)
    assert (rc, out, err) == (1, "", f"kling-bot: {refusal}\n")
    assert not (against_simulator / "x.mp4").exists()
    assert simulator.submissions == [] and simulator.uploads == {}
    assert await _stored_job(against_simulator / "bot.sqlite") is None
    assert await _credits_of_cli_user(against_simulator / "bot.sqlite") == DAILY


def test_generate_no_sound_on_a_silent_model_makes_the_video(folder):
    done = kling("generate", "me.jpg", "--prompt", "a cat", "--model", "v2.1", "--no-sound", "--simulate",
                 "-o", "quiet.mp4", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert mp4_info((folder / "quiet.mp4").read_bytes())[0] == "h264"


def test_generate_simulated_refusal_leaves_no_job(folder):
    done = kling("generate", "me.jpg", "--prompt", "a cat", "--model", "v3", "--duration", "20", "--simulate",
                 cwd=folder)
    assert done.returncode == 1
    assert done.stderr == "kling-bot: Duration must be from 3 to 15 seconds (got 20).\n"
    assert kling("jobs", "--simulate", cwd=folder).stdout.strip() == messages.NO_CLI_JOBS


# --- 3: kling-bot models ------------------------------------------------------------------------

def _line_of(text: str, key: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{key} ") or line == key)


def test_models_simulated_lists_the_offer_with_short_names_features_and_prices(folder):
    done = kling("models", "--simulate", cwd=folder)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("Models on offer (ask for one by its short name):\n")
    v3 = _line_of(text, "v3.0-pro")
    assert "sound" in v3 and "1080p" in v3 and "up to 15 s" in v3
    assert v3.endswith("· 3 credits per 5 s")  # the simulator's $0.56 at 0.25 a credit, rounded up
    assert _line_of(text, "v2.1").endswith("· 1 credit per 5 s") and "(default)" in _line_of(text, "v2.1")
    assert "end frame" in _line_of(text, "o1-std") and "up to 15 s" in _line_of(text, "o1-std")
    assert "sound" not in _line_of(text, "v2.5-turbo-pro")
    assert _line_of(text, "effects").endswith("· 1 credit")
    assert "master" not in text and "avatar" not in text  # not enabled


async def test_models_prices_are_the_simulators_quotes(against_simulator, simulator):
    simulator.set_base_price(V3, "1.00")  # 4 credits per 5 s
    rc, out, err = await kling_async("models", cwd=against_simulator)
    assert rc == 0, err
    assert _line_of(out, "v3.0-pro").endswith("· 4 credits per 5 s")
    asked = [r for r in simulator.price_requests if r["model_id"] == V3]
    assert any(r["inputs"].get("duration") == 5 and not r["inputs"].get("sound") for r in asked)


def test_models_without_a_config_offers_the_default_set(tmp_path):
    done = kling("models", "--simulate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    keys = [line.split(" ")[0] for line in done.stdout.splitlines()[1:]]
    assert keys == ["effects", "v1.6", "v2.1", "master", "v3.0-pro", "avatar"]


# --- the demo, the README's commands, the help texts ----------------------------------------------

def test_demo_animates_with_a_newer_model(tmp_path):
    lines = "/models\n/animate --model v3 --duration 12 --sound --aspect 9:16 a cat dances\n/quota\n"
    done = subprocess.run([sys.executable, "-m", "adapters", "demo", "--job-seconds", "0.5"], cwd=tmp_path,
                          input=lines, capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert any(line.startswith("v3.0-pro (or v3, v3.0) · ") and line.endswith("· 3 credits per 5 s") for line in out)
    [queued] = [line for line in out if line.startswith("Job 1 queued")]
    assert queued.startswith("Job 1 queued (v3.0-pro: a cat dances)") and "It costs 9 credits; 1 left." in queued
    [saved] = [line for line in out if line.startswith("[job 1] done: ")]
    path = tmp_path / saved.removeprefix("[job 1] done: ").split(" (")[0]
    assert mp4_info(path.read_bytes())[0] == "h264"
    assert any(line.startswith("You have 1 credit.") for line in out)


def test_the_readmes_effect_command_still_works(folder):
    done = kling("generate", "me.jpg", "--effect", "hula", "--simulate", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kling-1.mp4"
    assert mp4_info((folder / "kling-1.mp4").read_bytes())[0] == "h264"


def test_the_readmes_master_command_still_works(folder):
    done = kling("generate", "me.jpg", "--prompt", "a cat dances", "--model", "master", "--duration", "10",
                 "-o", "cat.mp4", "--simulate", cwd=folder)
    # master is not in this folder's [models] enabled: refused by name, listing what is offered
    assert done.returncode == 1
    assert done.stderr.startswith("kling-bot: Unknown model 'master'.")
    (folder / "config.toml").unlink()
    done = kling("generate", "me.jpg", "--prompt", "a cat dances", "--model", "master", "--duration", "10",
                 "-o", "cat.mp4", "--simulate", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert mp4_info((folder / "cat.mp4").read_bytes())[0] == "h264"


def _help(*command: str) -> str:
    done = kling(*command, "--help", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())  # argparse's wrapping undone


def test_generate_help_names_the_new_options():
    text = _help("generate")
    assert "--sound, --no-sound" in text and "--aspect ASPECT" in text
    assert "a short name or a WaveSpeed id" in text and "`kling-bot models` lists them" in text
    assert "3 to 15" in text and "--end-image" in text


def test_models_help_says_what_it_shows():
    text = _help("models")
    assert "usage: kling-bot models [-h] [--config CONFIG] [--simulate]" in text
    assert "GET /api/v3/models" in text and "price per 5 s" in text and "credit_usd" in text
    assert "models list the models on offer and their prices" in " ".join(
        kling("--help", cwd=ROOT).stdout.split())

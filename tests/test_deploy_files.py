"""The Dockerfile, compose.yaml and deploy/systemd/kling-bot.service run what the README
says: a non-root bot, its database and media on a volume, its config where the command
line is told to look, ``kling-bot doctor`` as the container's health check, and a stop
that waits for the bot's own clean stop (within ``[storage] lease_seconds``).

There is no Docker daemon here: the files are read and their command lines parsed by the
bot's own argument parser; the image's install step is run on what its build context holds;
systemd-analyze verifies the unit where systemd is installed."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

from adapters.cli import build_parser
from bot.config import StorageSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG_IN_CONTAINER = "/config/config.toml"
DATA = PurePosixPath("/data")
LEASE_SECONDS = StorageSettings().lease_seconds  # the default the stop timeouts are set above


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments left out."""
    joined, parts = [], []
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        parts.append(line.rstrip().removesuffix("\\").strip())
        if not line.rstrip().endswith("\\"):
            joined.append(" ".join(parts))
            parts = []
    assert not parts, "a continuation line ends the file"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def _exec_form(arguments: str) -> list[str]:
    form = json.loads(arguments)
    assert isinstance(form, list) and all(isinstance(word, str) for word in form), arguments
    return form


@pytest.fixture(scope="module")
def docker() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for instruction, arguments in _instructions(ROOT / "Dockerfile"):
        found.setdefault(instruction, []).append(arguments)
    return found


def test_the_image_runs_the_bot_as_a_user_of_its_own(docker):
    assert docker["FROM"] == ["python:3.11-slim"]
    [user] = docker["USER"]
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    assert any("useradd" in run and user in run.split() for run in docker["RUN"])  # made, not assumed
    # USER comes after every RUN: nothing the image runs at start is root's.
    order = [instruction for instruction, _ in _instructions(ROOT / "Dockerfile")]
    assert order.index("USER") > max(i for i, name in enumerate(order) if name == "RUN")


def test_the_database_and_media_are_on_a_volume_and_the_config_where_the_command_reads_it(docker):
    [volume] = docker["VOLUME"]
    assert _exec_form(volume) == [str(DATA)]
    # The defaults' relative paths ([storage] path, videos_dir) resolve in the working directory.
    assert PurePosixPath(docker["WORKDIR"][-1]) == DATA
    # So do those of config.example.toml, copied to the read-only /config: none is read
    # against the config's own folder.
    example = load_settings(ROOT / "config.example.toml", env={}).storage
    assert (example.path, example.videos_dir) == (StorageSettings().path, StorageSettings().videos_dir)
    for relative in (example.path, example.videos_dir):
        assert not PurePosixPath(relative).is_absolute()
    [entrypoint], [cmd] = docker["ENTRYPOINT"], docker["CMD"]
    command = _exec_form(entrypoint) + _exec_form(cmd)
    assert command[0] == "kling-bot"
    arguments = build_parser().parse_args(command[1:])
    assert (arguments.command, str(arguments.config), arguments.role) == ("run", CONFIG_IN_CONTAINER, "all")
    assert docker["STOPSIGNAL"] == ["SIGTERM"]


def test_the_health_check_is_kling_bot_doctor_on_the_same_config(docker):
    [healthcheck] = docker["HEALTHCHECK"]
    options, _, command = healthcheck.partition(" CMD ")
    words = _exec_form(command)
    assert words[:3] == ["kling-bot", "doctor", "--quick"] and words[3:] == ["--config", CONFIG_IN_CONTAINER]
    assert "--interval=1m" in options.split()
    parsed = build_parser().parse_args(words[1:])
    assert str(parsed.config) == CONFIG_IN_CONTAINER and parsed.quick


def test_the_images_install_step_builds_from_what_its_build_context_holds(tmp_path, docker):
    """Only what .dockerignore lets in is there to COPY; from it, the package builds with
    everything ``run --simulate`` and the catalog need (their JSON files too)."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    copied = [word for copy in docker["COPY"] for word in copy.split()[:-1]]
    assert set(copied) <= set(allowed), "COPY of a file the build context leaves out"
    context = tmp_path / "context"
    context.mkdir()
    for name in copied:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, context / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--quiet", "-w", str(tmp_path / "wheel"), str(context)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [wheel] = (tmp_path / "wheel").glob("kling_bot-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"adapters/cli.py", "bot/catalog/seed_models.json", "bot/devtools/simulator.py"} <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "kling-bot = adapters.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


# --- compose.yaml --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_runs_the_bot_image_on_a_volume_with_an_optional_postgresql(compose, docker):
    bot, postgres = compose["services"]["bot"], compose["services"]["postgres"]
    assert bot["build"] == "."
    arguments = build_parser().parse_args(bot["command"])
    assert (arguments.command, str(arguments.config)) == ("run", CONFIG_IN_CONTAINER)
    mounts = {volume.split(":")[1]: volume for volume in bot["volumes"]}
    assert mounts[str(DATA)].split(":")[0] in compose["volumes"]  # a named volume: kept across upgrades
    assert mounts[CONFIG_IN_CONTAINER].endswith(":ro")
    assert "profiles" not in bot and postgres["profiles"] == ["postgres"]  # PostgreSQL only when asked
    assert bot["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    assert postgres["image"].startswith("postgres:")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    # None built in, and none required of a bot without the postgres profile: compose fills in
    # every service's variables before it drops those of profiles not asked for.
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}"
    assert ":?" not in (ROOT / "compose.yaml").read_text()
    grace = bot["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) > LEASE_SECONDS


def test_compose_says_how_to_point_the_bot_at_its_postgresql(compose):
    """The URL the comment gives names the postgres service and its user and database."""
    postgres = compose["services"]["postgres"]["environment"]
    [url] = [word for line in (ROOT / "compose.yaml").read_text().splitlines() if "KLING_DATABASE_URL=" in line
             for word in line.split() if word.startswith("KLING_DATABASE_URL=")]
    assert url.removeprefix("KLING_DATABASE_URL=") == (
        f"postgresql://{postgres['POSTGRES_USER']}:<POSTGRES_PASSWORD>@postgres:5432/{postgres['POSTGRES_DB']}")
    env_keys = {line.split("=", 1)[0] for line in (ROOT / "deploy" / "kling-bot.env.example").read_text().splitlines()
                if line and not line.startswith("#")}
    assert "KLING_DATABASE_URL" in env_keys  # the file compose's comment says to copy has the key


# --- systemd -------------------------------------------------------------------------------

UNIT = ROOT / "deploy" / "systemd" / "kling-bot.service"
INSTALLED = "/opt/kling-bot/.venv/bin/kling-bot"


def _service(unit: Path) -> dict[str, str]:
    settings: dict[str, str] = {}
    section = ""
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[f"{section}.{key}"] = value
    return settings


def test_the_unit_runs_the_bot_as_its_own_user_and_restarts_it(tmp_path):
    unit = _service(UNIT)
    assert unit["Service.User"] == "kling-bot" and unit["Service.Group"] == "kling-bot"
    assert unit["Service.Restart"] == "on-failure"
    command = shlex.split(unit["Service.ExecStart"])
    assert command[0] == INSTALLED
    arguments = build_parser().parse_args(command[1:])
    assert (arguments.command, str(arguments.config), arguments.role) == (
        "run", "/etc/kling-bot/config.toml", "all")
    assert unit["Service.KillSignal"] == "SIGTERM"
    assert int(unit["Service.TimeoutStopSec"]) > LEASE_SECONDS  # the bot's own stop comes first
    # What it may write (ProtectSystem=strict) is where its working directory is.
    assert unit["Service.ReadWritePaths"] == unit["Service.WorkingDirectory"]
    if shutil.which("systemd-analyze") is None:
        return
    local = tmp_path / UNIT.name
    local.write_text(UNIT.read_text().replace(INSTALLED, str(Path(sys.executable).with_name("kling-bot"))))
    done = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr

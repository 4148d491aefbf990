"""A new image-to-video model is one entry in bot/catalog.py: every front end picks it up.

The entry is added before anything else imports the catalog (as an edit of the file
would be), in a fresh process, which then reports what each front end offers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent("""
    import asyncio, contextlib, dataclasses, io, json, sys
    from bot import catalog

    v21 = next(m for m in catalog.MODELS if m.key == "v2.1")
    catalog.MODELS = (*catalog.MODELS, dataclasses.replace(
        v21, key="v9", id="kwaivgi/kling-v9-i2v-pro", title="Kling v9 pro", aliases=("9",),
        durations=(5, 10, 15), cost=3))

    # WaveSpeed (here its simulator) lists the model too, with a schema taking 15 s
    from bot.devtools import models as served
    listed = served.load_listing

    def with_v9(*paths):
        entries = listed(*paths)
        v9 = json.loads(json.dumps(next(e for e in entries if e["model_id"] == v21.id)))
        v9["model_id"] = "kwaivgi/kling-v9-i2v-pro"
        v9["api_schema"]["api_schemas"][0]["request_schema"]["properties"]["duration"]["enum"].append("15")
        return [*entries, v9]

    served.load_listing = with_v9

    from adapters import cli
    from adapters.discord import commands
    from adapters.text_commands import parse_animate
    from bot import messages
    from bot.config import load_settings

    help_out = io.StringIO()
    with contextlib.redirect_stdout(help_out), contextlib.suppress(SystemExit):
        cli.main(["generate", "--help"])
    params = commands.animate._params
    animate = parse_animate("--model v9 --duration 15 a cat dances")
    code = cli.main(["generate", sys.argv[1], "--prompt", "a cat dances", "--model", "v9",
                     "--duration", "15", "--simulate", "-o", sys.argv[2]])
    print(json.dumps({
        "cli_help": help_out.getvalue(),
        "generate_exit": code,
        "discord_models": [c.value for c in params["model"].choices],
        "discord_durations": [c.value for c in params["duration"].choices],
        "parsed": [animate.model, animate.params.duration],
        "telegram_help": messages.telegram_help(catalog.animate_options()),
        "console_help": messages.console_help(len(catalog.EFFECTS), catalog.animate_options()),
        "default_cost": load_settings(None, env={}).costs["v9"],
        "cost_of_15s": __import__("bot.credits").credits.cost_of(catalog.MODELS[-1], 15, {}),
    }))
""")


def test_a_model_added_to_the_catalog_appears_everywhere(tmp_path):
    photo = tmp_path / "cat.jpg"
    from tests.helpers import image_bytes
    photo.write_bytes(image_bytes(640, 480))
    done = subprocess.run([sys.executable, "-c", PROBE, str(photo), str(tmp_path / "out.mp4")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "v9" in seen["cli_help"] and "15" in seen["cli_help"]
    assert seen["generate_exit"] == 0 and (tmp_path / "out.mp4").stat().st_size > 1000
    assert seen["discord_models"] == ["v1.6", "v2.1", "master", "v9"]
    assert seen["discord_durations"] == [5, 10, 15]
    assert seen["parsed"] == ["v9", 15]
    assert "--model v1.6|v2.1|master|v9  --duration 5|10|15" in seen["telegram_help"]
    assert "--model v1.6|v2.1|master|v9" in seen["console_help"]
    assert (seen["default_cost"], seen["cost_of_15s"]) == (3, 9)

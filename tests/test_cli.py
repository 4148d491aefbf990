"""The command line as a user runs it: whole processes, exit codes, one-line errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import image_bytes, mp4_info

ROOT = Path(__file__).resolve().parent.parent


def kling(*args: str, cwd: Path, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "WAVESPEED_API_KEY"}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "adapters", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=120, env=full_env)


def test_generate_with_the_simulator_writes_a_playable_mp4(tmp_path):
    (tmp_path / "cat.jpg").write_bytes(image_bytes(640, 480))
    done = kling("generate", "cat.jpg", "--effect", "hula", "--simulate", "-o", "out.mp4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "out.mp4"
    assert mp4_info((tmp_path / "out.mp4").read_bytes())[0] == "h264"


def test_generate_animate_options_reach_the_model(tmp_path):
    (tmp_path / "cat.jpg").write_bytes(image_bytes(640, 480))
    done = kling("generate", "cat.jpg", "--prompt", "a cat dances", "--model", "master",
                 "--duration", "10", "--guidance", "0.3", "--simulate", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "kling-1.mp4").stat().st_size > 1000


def test_generate_refusal_is_one_line_and_nonzero(tmp_path):
    (tmp_path / "cat.jpg").write_bytes(image_bytes(640, 480))
    done = kling("generate", "cat.jpg", "--effect", "hulla", "--simulate", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "kling-bot: Unknown effect 'hulla'. Did you mean 'hula'?"


def test_generate_bad_image_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a photo")
    done = kling("generate", "notes.txt", "--effect", "hula", "--simulate", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "could not be read" in done.stderr
    missing = kling("generate", "nope.jpg", "--effect", "hula", "--simulate", cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read the image nope.jpg" in missing.stderr


def test_generate_without_a_key_says_how_to_add_one(tmp_path):
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    done = kling("generate", "cat.jpg", "--effect", "hula", cwd=tmp_path)
    assert done.returncode == 2
    assert "WAVESPEED_API_KEY" in done.stderr and "Traceback" not in done.stderr


def test_generate_honours_the_config_file_and_env_key(tmp_path):
    """Against a simulator run as its own server, found through [wavespeed] base_url."""
    server = subprocess.Popen([sys.executable, "-m", "adapters", "simulator", "--port", "0",
                               "--job-seconds", "0.5"], cwd=tmp_path, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        banner = server.stdout.readline()
        base_url = banner.split("listening on ")[1].split(" ")[0]
        (tmp_path / "cat.jpg").write_bytes(image_bytes())
        (tmp_path / "my.toml").write_text(
            f'[wavespeed]\nbase_url = "{base_url}"\npoll_interval = 0.2\n'
            f'[storage]\npath = "state/bot.sqlite"\nvideos_dir = "state/videos"\n')
        done = kling("generate", "cat.jpg", "--effect", "hula", "--config", "my.toml",
                     cwd=tmp_path, env={"WAVESPEED_API_KEY": "env-key"})
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "state" / "bot.sqlite").exists()
    finally:
        server.terminate()
        server.wait(10)


def test_config_mistake_is_one_line_naming_the_key(tmp_path):
    (tmp_path / "config.toml").write_text("[quota]\ndaily_credit = 5\n")
    (tmp_path / "cat.jpg").write_bytes(image_bytes())
    done = kling("generate", "cat.jpg", "--effect", "hula", "--simulate", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("kling-bot: config.toml: unknown key [quota] daily_credit "
                                   "(did you mean 'daily_credits'?)")


def test_demo_with_no_input_runs_the_tour_and_saves_videos(tmp_path):
    """The tour queues two jobs (the demo runs one at a time), lists them, cancels the
    queued one, and ends once the first is saved."""
    done = kling("demo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert any(line.startswith("Job 1 queued (effect hula)") for line in out)
    assert any(line.startswith("Job 2 queued (v2.1: the sun smiles and waves)") for line in out)
    assert any(line.startswith("Job 2 (v2.1: the sun smiles and waves): queued") for line in out)
    after_cancel = out[out.index("> /cancel 2") + 1:]
    assert [line for line in after_cancel if re.search(r"\b[Jj]ob 2\b", line)] == [
        "Job 2 cancelled; 1 credit refunded."]
    assert any(line.startswith("You have 9 credits.") for line in out)
    assert "Waiting for job 1 to finish; Ctrl+C quits without it." in out
    assert out[-1].startswith("[job 1] done: kling-demo/job-1-effect-hula.mp4")
    videos = sorted((tmp_path / "kling-demo").glob("*.mp4"))
    assert len(videos) == 1 and mp4_info(videos[0].read_bytes())[3] > 1


def test_demo_reads_typed_commands(tmp_path):
    (tmp_path / "me.png").write_bytes(image_bytes(500, 500, "PNG"))
    script = "/effect hulla\n/effect jelly-press me.png\n/animate --guidance 3 go\n/jobs\n/cancel 9\n/quit\n"
    done = kling("demo", cwd=tmp_path, stdin=script)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Unknown effect 'hulla'. Did you mean 'hula'?" in out
    assert "Job 1 queued (effect jelly press)" in out and "[job 1] done: kling-demo/job-1-effect-jelly-press.mp4" in out
    assert "Guidance must be between 0 and 1 (got 3)" in out
    # /jobs is answered while job 1 runs; /quit then waits for it.
    assert out.index("Job 1 (effect jelly press): ") < out.index("[job 1] done")
    assert "You have no job 9." in out


def test_help_texts():
    for args in (["--help"], ["generate", "--help"], ["demo", "--help"], ["run", "--help"],
                 ["simulator", "--help"]):
        done = kling(*args, cwd=ROOT)
        assert done.returncode == 0 and "usage: kling-bot" in done.stdout


def test_run_without_any_token_says_how_to_add_one(tmp_path):
    done = kling("run", cwd=tmp_path, env={"TELEGRAM_BOT_TOKEN": "", "DISCORD_BOT_TOKEN": ""})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "no chat bot is configured" in done.stderr and "DISCORD_BOT_TOKEN" in done.stderr

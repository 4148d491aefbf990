"""Each of the five models, end to end over real HTTP against the simulator."""

from __future__ import annotations

import base64

import pytest

from bot.catalog import Params
from bot.jobs import GenerationRequest, JobState
from tests.conftest import API_KEY, effect_request, user
from tests.helpers import audio_bytes, image_bytes, mp4_info, settled


async def _run(engine, courier, request):
    answer = await engine.accept(request)
    assert hasattr(answer, "job"), answer.text
    kind, video = await courier.outcome(answer.job.id)
    assert kind == "delivered", video
    return answer.job.id, video


def _fetched(simulator, url: str) -> bytes:
    token = url.split("/media/")[1].split("/")[0]
    return simulator.uploads[token][0]


async def test_effect_job_delivers_a_playable_mp4_and_sends_the_documented_body(
        engine, courier, simulator):
    photo = image_bytes(640, 480)
    job_id, video = await _run(engine, courier, effect_request("hula", image=photo))

    codec, width, height, frames = mp4_info(video)
    assert (codec, frames > 1) == ("h264", True)
    [submission] = simulator.submissions
    assert submission["model"] == "kwaivgi/kling-effects"
    assert set(submission["body"]) == {"image", "effect_scene"}
    assert submission["body"]["effect_scene"] == "hula"
    # the photo reached WaveSpeed byte for byte (it was already a valid JPEG)
    assert _fetched(simulator, submission["body"]["image"]) == photo
    assert (await settled(engine, job_id)).state == JobState.DONE
    assert courier.stages(job_id)[:2] == ["queued", "submitting"] or \
        courier.stages(job_id)[0] == "submitting"
    assert {"generating", "downloading", "uploading"} <= set(courier.stages(job_id))


@pytest.mark.parametrize("model_name, model_id", [
    ("v1.6", "kwaivgi/kling-v1.6-i2v-standard"),
    ("v2.1", "kwaivgi/kling-v2.1-i2v-standard"),
    ("master", "kwaivgi/kling-v2.0-i2v-master"),
])
async def test_image_to_video_models_send_the_documented_inputs(
        engine, courier, simulator, model_name, model_id):
    request = GenerationRequest(
        user(), "animate", image_bytes(800, 600),
        Params(prompt="a cat dances", negative_prompt="blurry", guidance=0.7, duration=10),
        model=model_name)
    _, video = await _run(engine, courier, request)

    assert mp4_info(video)[0] == "h264"
    [submission] = simulator.submissions
    assert submission["model"] == model_id
    body = submission["body"]
    assert set(body) == {"image", "prompt", "negative_prompt", "guidance_scale", "duration"}
    assert body["prompt"] == "a cat dances"
    assert body["negative_prompt"] == "blurry"
    assert body["guidance_scale"] == 0.7
    assert body["duration"] == "10"  # the API takes the duration as a string


async def test_master_takes_an_end_image(engine, courier, simulator):
    end = image_bytes(800, 600, "PNG")
    request = GenerationRequest(user(), "animate", image_bytes(800, 600),
                                Params(prompt="zoom out"), model="master", end_image=end)
    await _run(engine, courier, request)
    body = simulator.submissions[0]["body"]
    assert set(body) == {"image", "end_image", "prompt", "duration"}
    assert body["duration"] == "5"
    assert _fetched(simulator, body["end_image"]) == end


async def test_avatar_sends_image_audio_and_prompt(engine, courier, simulator):
    clip = audio_bytes(3.0, "mp3", "libmp3lame", rate=22050)
    request = GenerationRequest(user(), "avatar", image_bytes(), Params(prompt="smiling"),
                                audio=clip)
    job_id, video = await _run(engine, courier, request)
    assert mp4_info(video)[0] == "h264"
    [submission] = simulator.submissions
    assert submission["model"] == "kwaivgi/kling-v1-ai-avatar-standard"
    assert set(submission["body"]) == {"image", "audio", "prompt"}
    assert _fetched(simulator, submission["body"]["audio"]) == clip


async def test_data_uri_mode_sends_media_inline(make_engine, courier, simulator):
    engine = await make_engine(media="data_uri")
    photo = image_bytes(640, 480, "PNG")
    await _run(engine, courier, effect_request("hula", image=photo))
    image_ref = simulator.submissions[0]["body"]["image"]
    assert image_ref.startswith("data:image/png;base64,")
    assert base64.b64decode(image_ref.split(",", 1)[1]) == photo
    assert not simulator.uploads


async def test_api_key_goes_only_in_the_authorization_header(engine, courier, simulator, caplog):
    caplog.set_level("DEBUG")
    await _run(engine, courier, effect_request())
    api_calls = [r for r in simulator.requests if r["path"].startswith("/api/")]
    assert api_calls and all(r["headers"]["Authorization"] == f"Bearer {API_KEY}" for r in api_calls)
    assert all(API_KEY not in str(r["path"]) for r in simulator.requests)
    assert API_KEY not in str(simulator.submissions)
    assert API_KEY not in caplog.text

"""After a video: result buttons (rerun), /history's re-post, prices, progress, cancel.

Engine-level checks of the chat-experience core (#10), through the real engine and
the WaveSpeed simulator: what WaveSpeed receives, what the user is charged, what the
chat is told. The platform tests drive the same calls through PTB and discord.py.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from bot import catalog
from bot.catalog import Params
from bot.jobs import Accepted, GenerationRequest, JobState, Progress, Rejected
from tests.conftest import effect_request, press, user
from tests.helpers import audio_bytes, image_bytes, settled


async def _delivered(engine, courier, request):
    answer = await engine.accept(request)
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(engine, answer.job.id)
    return answer.job.id


async def test_again_sends_the_same_inputs_and_charges_whoever_pressed(engine, courier, simulator):
    source = await _delivered(engine, courier, GenerationRequest(
        user(1), "animate", image_bytes(), Params(prompt="a cat dances", duration=10, guidance=0.7,
                                                  negative_prompt="blur"), model="v1.6"))
    owner_left = (await engine.balance(user(1))).total
    again = await engine.rerun(press(user(2)), source, reply_to={"chat": 7})
    assert again.job.cost == 2 and (await engine.balance(user(2))).total == 8
    assert (await engine.balance(user(1))).total == owner_left  # the presser pays, not the owner
    assert (await courier.outcome(again.job.id))[0] == "delivered"
    first, second = simulator.submissions
    assert second["model"] == first["model"] == "kwaivgi/kling-v1.6-i2v-standard"
    assert {k: v for k, v in second["body"].items() if k != "image"} == \
        {k: v for k, v in first["body"].items() if k != "image"}
    assert second["body"]["prompt"] == "a cat dances" and second["body"]["duration"] == "10"
    assert (await engine.store.job(again.job.id)).reply_to == {"chat": 7}


async def test_another_effect_and_a_prompt_reuse_the_photo(engine, courier, simulator):
    source = await _delivered(engine, courier, effect_request("hula"))
    other = await engine.rerun(press(user()), source, reply_to={}, effect="Boyfriend")  # a menu's readable name
    assert (await courier.outcome(other.job.id))[0] == "delivered"
    prompted = await engine.rerun(press(user()), source, reply_to={}, prompt="she waves")
    assert (await courier.outcome(prompted.job.id))[0] == "delivered"
    _, effect, animate = simulator.submissions
    assert effect["body"]["effect_scene"] == "boylfriend"  # the API's own spelling
    assert animate["model"] == "kwaivgi/kling-v2.1-i2v-standard" and animate["body"]["prompt"] == "she waves"
    images = {bytes(t.image) for t in simulator.tasks.values()}
    assert len(simulator.tasks) == 3 and len(images) == 1  # the same photo went each time


async def test_an_avatar_again_keeps_its_audio(engine, courier, simulator):
    source = await _delivered(engine, courier, GenerationRequest(
        user(), "avatar", image_bytes(), Params(), audio=audio_bytes(6.0)))
    again = await engine.rerun(press(user()), source, reply_to={})
    assert again.job.cost == 2  # 6 s of audio: two started 5 s
    assert (await courier.outcome(again.job.id))[0] == "delivered"
    assert all("audio" in s["body"] for s in simulator.submissions)


async def test_buttons_refuse_without_charging(engine, courier, simulator):
    source = await _delivered(engine, courier, effect_request("hula"))
    await engine.set_credits(user(3), 0)
    refused = await engine.rerun(press(user(3)), source, reply_to={})
    assert isinstance(refused, Rejected) and "out of credits" in refused.text
    assert isinstance(await engine.rerun(press(user()), source, reply_to={}, effect="hulla"), Rejected)
    engine.results.clock = lambda: time.time() + 8 * 86400  # past [storage] keep_days
    await engine.results.expire()
    gone = await engine.rerun(press(user()), source, reply_to={})
    assert isinstance(gone, Rejected) and "no longer kept" in gone.text
    simulator.plan_outcome("failed")
    failed = await engine.accept(effect_request("hula"))
    await courier.outcome(failed.job.id)
    assert isinstance(await engine.rerun(press(user()), failed.job.id, reply_to={}), Rejected)
    assert len(simulator.submissions) == 2  # the two accepted jobs; no refused button reached WaveSpeed
    assert (await engine.balance(user(3))).total == 0


async def test_history_lists_jobs_and_fetches_a_video_again(engine, courier, simulator):
    first = await _delivered(engine, courier, effect_request("hula"))
    second = await _delivered(engine, courier, effect_request("jelly press"))
    assert [j.id for j in await engine.history(user())] == [second, first]
    video = await engine.fetch_video(user(), first)
    assert not isinstance(video, Rejected)
    assert video.path.read_bytes() == courier.delivered[first] and video.size == len(courier.delivered[first])
    video.path.unlink()
    assert (await engine.fetch_video(user(2), first)).text == f"You have no job {first}."
    engine.results.clock = lambda: time.time() + 8 * 86400
    assert "no longer available" in (await engine.fetch_video(user(), first)).text


async def test_prices_are_known_before_spending(engine, settings):
    assert engine.price_text() == ("Prices: /effect 1 credit · /animate v1.6 1 credit per 5 s · /animate v2.1 "
                                   "1 credit per 5 s · /animate master 4 credits per 5 s · /animate v3.0-pro "
                                   "3 credits per 5 s · /avatar 1 credit per 5 s.")
    assert engine.quote("animate", "master", Params(prompt="x", duration=10)) == 8
    assert await engine.audio_allowance(user()) == 30  # [media] max_audio_seconds
    await engine.set_credits(user(), 3)
    assert await engine.audio_allowance(user()) == 15
    assert await engine.precheck(user(), "avatar", None, Params(has_audio=True), audio_seconds=14.2) is None
    assert (await engine.precheck(user(), "avatar", None, Params(has_audio=True), audio_seconds=16)).text == (
        "The audio is 16 s long and costs 4 credits; you have 3, enough for 15 s. Send a shorter one.")
    assert "the limit is 30 s" in (await engine.precheck(user(), "avatar", None, Params(has_audio=True),
                                                  audio_seconds=31)).text
    await engine.set_credits(user(), 0)
    refusal = await engine.precheck(user(), "avatar", None, Params(has_audio=True))
    assert refusal.text == ("A talking photo costs 1 credit per 5 s of audio and you have 0 credits. "
                            "/quota says when your credits reset.")
    engine.prices.settings = replace(settings, costs={**settings.costs, "master": {5: 4, 10: 7}})
    assert "/animate master 4 credits for 5 s, 7 credits for 10 s" in engine.price_text()


async def test_the_default_settings_never_offer_what_a_day_cannot_buy(engine, settings):
    """Every built-in model's longest request, and every offered model's 10 s clip, costs at
    most one day's credits by default (a 15 s clip with sound of the newest may cost more)."""
    for model in engine.catalog.offered:
        longest = max(model.durations) if model.durations else (
            settings.media.max_audio_seconds if model.kind == "avatar" else 5)
        seconds = longest if model.id in {m.id for m in catalog.BUILT_IN.models} else min(longest, 10)
        inputs = engine.prices.probe_inputs(model, seconds if model.durations else None)
        cost = (await engine.prices.price(model, inputs, seconds)).credits
        assert cost <= settings.quota.daily_credits, model.key


async def test_progress_moves_between_polls_with_a_percentage_and_time_left(make_engine, courier, simulator):
    simulator.job_seconds = 5.0
    engine = await make_engine(poll_interval=30.0, expected_run_seconds=5.0)
    answer = await engine.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    generating = [p for j, p in courier.progress_log if p.stage == "generating"]
    assert len(generating) >= 2
    fractions = [p.fraction for p in generating]
    assert fractions == sorted(fractions) and fractions[-1] > 0.4
    assert "%, about 0:0" in generating[0].text()
    assert Progress("generating", elapsed=80, expected=60).text() == \
        "Generating… 95%, taking a little longer than usual."


async def test_a_cancel_is_told_once(make_engine, courier):
    engine = await make_engine(max_concurrent=1)
    await engine.accept(effect_request(who=user(1)))
    queued = await engine.accept(effect_request(who=user(2)))
    text = await engine.cancel(user(2), queued.job.id)
    assert courier.cancellations == {queued.job.id: text}
    assert queued.job.id not in courier.failures
    assert (await engine.store.job(queued.job.id)).state == JobState.CANCELLED


async def test_a_button_knows_before_opening_a_menu_whether_its_photo_is_kept(engine, courier):
    source = await _delivered(engine, courier, effect_request("hula"))
    assert await engine.rerun_refusal(press(user()), source) is None
    assert (await engine.job_of(user(), source)).id == source and await engine.job_of(user(2), source) is None
    engine.results.clock = lambda: time.time() + 8 * 86400
    await engine.results.expire()
    assert "no longer kept" in (await engine.rerun_refusal(press(user()), source)).text
    assert "no longer kept" in (await engine.rerun_refusal(press(user()), 10**6)).text


async def test_a_slow_progress_edit_does_not_delay_the_video(make_engine, courier, simulator):
    """A chat that takes seconds to edit a status message: the video is not held up."""
    class SlowChat(type(courier)):
        async def progress(self, job, update):
            await asyncio.sleep(4)

    slow = SlowChat()
    engine = await make_engine()
    engine.register("test", slow)
    started = time.monotonic()
    answer = await engine.accept(effect_request())
    assert (await slow.outcome(answer.job.id))[0] == "delivered"
    assert time.monotonic() - started < 3.0


async def test_a_double_press_handled_by_two_processes_is_one_order(make_engine, courier, simulator):
    """Several processes may share one database: the two presses of one double tap, each
    answered by another process, are still one job and one charge."""
    first = await make_engine()
    second = await make_engine()  # another process on the same database
    answer = await first.accept(effect_request())
    assert (await courier.outcome(answer.job.id))[0] == "delivered"
    await settled(first, answer.job.id)

    presses = [await engine.rerun(press(user(2)), answer.job.id, reply_to={"chat": 7}) for engine in (first, second)]
    assert [isinstance(p, Accepted) for p in presses].count(True) == 1, "one double tap, two paid jobs"


async def test_a_button_knows_before_any_message_whether_the_presser_can_pay(engine, courier):
    source = await _delivered(engine, courier, GenerationRequest(
        user(1), "animate", image_bytes(), Params(prompt="a cat dances"), model="master"))
    await engine.set_credits(user(2), 3)
    refusal = await engine.rerun_precheck(press(user(2)), source)
    assert "this needs 4 and you have 3" in refusal.text  # the source's price
    assert await engine.rerun_precheck(press(user(2)), source, effect="hula") is None  # an effect costs 1
    assert "Unknown effect" in (await engine.rerun_precheck(press(user(2)), source, effect="hulla")).text
    assert await engine.rerun_precheck(press(user(1)), source) is None


async def test_a_press_may_use_a_job_only_from_its_own_message_in_its_chat_or_as_its_owner(engine, courier):
    """Button data is the client's word: a stranger naming someone's job from another chat,
    or from a message that carries no such button, is refused like an expired button."""
    source = await _delivered(engine, courier, GenerationRequest(
        user(1), "animate", image_bytes(), Params(prompt="my secret prompt"), reply_to={"chat_id": 5}))
    stranger_elsewhere = press(user(2), "6")
    stranger_forged = press(user(2), "5", on_its_message=False)
    for forged in (stranger_elsewhere, stranger_forged):
        refusal = await engine.rerun_precheck(forged, source)
        assert refusal.text == (await engine.rerun_refusal(press(user(1)), 10**6)).text  # as if expired
        assert "secret" not in refusal.text
        answer = await engine.rerun(forged, source, reply_to={})
        assert isinstance(answer, Rejected) and "secret" not in answer.text
    assert (await engine.balance(user(2))).total == 10  # nothing charged
    assert await engine.rerun_precheck(press(user(2), "5"), source) is None  # the video's own button, in its chat
    assert await engine.rerun_precheck(press(user(1), "6", on_its_message=False), source) is None  # its owner

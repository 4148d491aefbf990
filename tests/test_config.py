from __future__ import annotations

from decimal import Decimal

import pytest

from bot.config import ConfigError, load_settings

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _load(tmp_path, text, env=None):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(path, env=env or {})


def test_every_key_has_a_default_except_secrets():
    s = load_settings(None, env={})
    assert s.wavespeed.api_key == "" and s.wavespeed.base_url == "https://api.wavespeed.ai"
    assert (s.quota.daily_credits, s.quota.reset_hour_utc, s.quota.max_jobs_per_user) == (10, 0, 2)


def test_the_example_config_loads_and_documents_every_key():
    example = (ROOT / "config.example.toml").read_text()
    settings = load_settings(ROOT / "config.example.toml", env={})
    for section in ("wavespeed", "storage", "quota", "media", "models", "telegram", "discord",
                    "spend", "moderation", "http", "log", "payments"):
        for key in vars(getattr(settings, section)):
            # A table of names may be documented as its own [section.key] table.
            assert f"{key} =" in example or f"[{section}.{key}]" in example, \
                f"[{section}] {key} is not in config.example.toml"
    assert settings.costs == {}  # every model costs what WaveSpeed quotes unless [costs] says otherwise
    assert settings.models.enabled is None and settings.quota.credit_usd == Decimal("0.25")


def test_secrets_from_environment_win_and_are_not_in_repr(tmp_path):
    s = _load(tmp_path, '[wavespeed]\napi_key = "from-file"\n',
              env={"WAVESPEED_API_KEY": "from-env", "TELEGRAM_BOT_TOKEN": "123:tok"})
    assert s.wavespeed.api_key == "from-env" and s.telegram.token == "123:tok"
    assert "from-env" not in repr(s) and "123:tok" not in repr(s)
    assert s.secrets == ["from-env", "123:tok"]


def test_telegram_lists(tmp_path):
    s = _load(tmp_path, '[telegram]\nadmins = [1, 2]\nallowed_chats = [-100]\nnsfw = "block"\n')
    assert (s.telegram.admins, s.telegram.allowed_chats, s.telegram.nsfw) == ([1, 2], [-100], "block")
    with pytest.raises(ConfigError, match=r"\[telegram\] admins must be a list of int"):
        _load(tmp_path, '[telegram]\nadmins = "me"\n')


@pytest.mark.parametrize("text, message", [
    ("[quota]\ndaily_credits = \"ten\"\n", "[quota] daily_credits must be a whole number (got 'ten')."),
    ("[quota]\nreset_hour_utc = 24\n", "[quota] reset_hour_utc must be 0 to 23."),
    ("[wavespeed]\nmedia = \"inline\"\n", "[wavespeed] media must be 'upload' or 'data_uri' (got 'inline')."),
    ("[wavespeed]\nbase_url = \"ftp://x\"\n", "[wavespeed] base_url must start with http:// or https://."),
    ("[wavespeed]\nmax_concurent = 3\n", "unknown key [wavespeed] max_concurent (did you mean 'max_concurrent'?)"),
    ("[wavespeeed]\n", "unknown section [wavespeeed] (did you mean 'wavespeed'?)"),
    ("[costs]\nmaster = \"lots\"\n", "[costs] master must be a whole number of credits"),
    ("[models]\nenabled = \"*v3*\"\n", "[models] enabled must be a list of str"),
    ("[models]\nfavourite = \"v3\"\n", "unknown key [models] favourite"),
    ("[models.names]\nv3 = 3\n", "[models] names.v3 must be a string"),
    ("[quota]\ncredit_usd = \"a quarter\"\n", "[quota] credit_usd must be a number"),
    ("[quota]\ncredit_usd = 0\n", "[quota] credit_usd must be more than 0"),
    ("[quota\n", "not valid TOML"),
])
def test_mistakes_name_the_key_on_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_costs_accept_a_table_by_duration(tmp_path):
    s = _load(tmp_path, '[costs]\nmaster = { 5 = 3, 10 = 5 }\neffects = 2\n')
    assert s.costs == {"master": {5: 3, 10: 5}, "effects": 2}  # the others: their quotes


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")


PACK = '[[payments.packs]]\nname = "{name}"\ncredits = {credits}\n{extra}\n'


def _pack(name="Starter", credits="20", extra='stars = 100'):
    return PACK.format(name=name, credits=credits, extra=extra)


def test_a_pack_name_of_32_characters_as_telegram_counts_them_loads(tmp_path):
    assert _load(tmp_path, _pack("😀" * 16)).payments.packs[0].name == "😀" * 16


def test_packs_load_and_each_platform_sells_its_own(tmp_path):
    s = _load(tmp_path, '[payments]\nsupport = "mail me"\n' + _pack() + _pack("Big", "500", 'discord_sku = "123"'))
    assert [p.name for p in s.payments.sold_on("telegram")] == ["Starter"]
    assert [(p.name, p.credits, p.discord_sku) for p in s.payments.sold_on("discord")] == [("Big", 500, "123")]
    assert s.payments.support == "mail me"


@pytest.mark.parametrize("text, message", [
    (_pack(extra=""), "[[payments.packs]] 'Starter' needs a stars price, a discord_sku, or both."),
    ('[[payments.packs]]\ncredits = 5\nstars = 10\n', "[[payments.packs]] number 1 has no name (got {"),
    (_pack("Starter", "0"), "[[payments.packs]] 'Starter': credits must be 1 to 1,000,000."),
    (_pack("Starter", '"20"'), "[[payments.packs]] 'Starter': credits must be a whole number (got '20')."),
    (_pack() + _pack(" starter"), "[[payments.packs]] ' starter': pack 'Starter' has that name too;"),
    (_pack(extra='discord_sku = "abc"'), "[[payments.packs]] 'Starter': discord_sku must be the SKU's numeric id"),
    (_pack(extra='discord_sku = "١٢٣"'), "[[payments.packs]] 'Starter': discord_sku must be the SKU's numeric id"),
    (_pack(extra="discord_sku = 1234567890123456789"),
     "[[payments.packs]] 'Starter': discord_sku must be a string, in quotes (got 1234567890123456789)."),
    (_pack(extra='discord_sku = "123"') + _pack("Big", "50", 'discord_sku = "123"'),
     "[[payments.packs]] 'Big': pack 'Starter' has discord_sku 123 too; each pack needs its own SKU."),
    (_pack(extra="star = 100"), "[[payments.packs]] 'Starter': unknown key star (did you mean 'stars'?)"),
    (_pack(extra="stars = -1"), "[[payments.packs]] 'Starter': stars must be 0 (not on Telegram) to 100,000."),
    (_pack("x" * 33), "name must be 1-32 characters"),
    # Telegram counts an invoice title in UTF-16 code units: 17 emoji are 34, and it refuses them
    (_pack("😀" * 17), "[[payments.packs]] '" + "😀" * 17 + "': name must be 1-32 characters (an emoji counts as 2)."),
    ('[payments.packs]\nname = "A"\n', "[payments] packs must be a list of tables, each under its own"
                                       " [[payments.packs]] line"),
])
def test_pack_mistakes_are_one_line_naming_the_pack(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_start_with_a_bad_pack_says_one_line_and_no_traceback(tmp_path):
    from tests.test_cli import kling
    one_sku = 'discord_sku = "123"'
    (tmp_path / "config.toml").write_text(_pack(extra=one_sku) + _pack("Big", "50", one_sku))
    done = kling("run", cwd=tmp_path, env={"TELEGRAM_BOT_TOKEN": "123:abc"})
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("kling-bot: config.toml: [[payments.packs]] 'Big': pack 'Starter' has"
                                   " discord_sku 123 too; each pack needs its own SKU.")

"""Checks what the fake chat servers receive against the services' published specs.

The fakes (tests/fake_telegram.py, tests/fake_discord.py) call this on every request, so a
request the real service refuses is refused the same way (Telegram: 400 "Bad Request: ...",
Discord: 400 "Invalid Form Body" 50035, 40060, 413 40005) and is also written to the fake's
``violations``, which tests/conftest.py asserts empty after every test: a client that
swallows the error cannot hide it.

The rules come from tests/specs/ (copies of the services' published specs; see its
README; KLING_SPECS_DIR points elsewhere):

- Telegram (telegram-bot-api.json): the method exists (case-insensitive); every parameter
  is known (Telegram ignores unknown ones: recorded, not refused); required ones are
  present; values have the spec's types, objects checked field by field against the type
  definitions; the "N-M characters/bytes" limits stated in the field descriptions
  (characters counted in UTF-16 code units, as Telegram does); BotCommand names
  ("only lowercase English letters, digits and underscores") and setWebhook's secret_token
  ("Only characters A-Z, a-z, 0-9, _ and - are allowed"); an inline keyboard button
  has exactly one action field.
- Discord (discord-openapi.pruned.json): the path and method match a route; the JSON body
  (or a multipart upload's payload_json) is valid against the operation's requestBody
  schema (jsonschema, $refs resolved in the document); plus limits Discord enforces that
  the schemas leave out: content <= 2000, <= 5 action rows of <= 5 components, custom_id
  1-100, <= 25 select options, autocomplete choice values <= 100; one initial response per
  interaction (40060); uploads within the interaction's attachment_size_limit or, for
  channel messages, ``DiscordRules.channel_upload_limit`` (413, 40005); a button's fields
  by its style (docs: components reference, Button): a premium button (style 6) has a
  ``sku_id`` and no ``custom_id``, ``label``, ``emoji`` or ``url``, a link button (5) a
  ``url`` and no ``custom_id`` or ``sku_id``, the others a ``custom_id`` and neither.
  Query strings: each parameter the operation declares has its schema's type (booleans
  as Discord reads them: true/True/1, false/False/0; ``sku_ids`` comma-separated
  snowflakes), within its minimum and maximum; undeclared ones Discord ignores.
- Discord answers: ``discord_response_headers`` names the headers the document declares
  for an answer (the X-RateLimit-* ones), ``discord_header_problems`` checks an answer has
  them with the declared types.

Opting out: a test that sends bad requests on purpose asserts ``fake.violations`` and then
clears it; ``fake.check_specs = False`` turns the checks off for one fake altogether.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from jsonschema import Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPECS_DIR = Path(os.environ.get("KLING_SPECS_DIR") or Path(__file__).resolve().parent / "specs")
TELEGRAM_SPEC = SPECS_DIR / "telegram-bot-api.json"
DISCORD_SPEC = SPECS_DIR / "discord-openapi.pruned.json"
DISCORD_API_PREFIX = "/api/v10"
DISCORD_DOC_URI = "urn:discord-openapi"
CHANNEL_UPLOAD_LIMIT = 10 * 1024 * 1024  # a bot's upload limit in a server without boosts


@dataclass(frozen=True)
class Problem:
    """One way a request breaks the spec.

    ``status`` is the HTTP status the real service answers (None: the service accepts the
    request and ignores the offending part, a violation all the same). ``message`` is the
    service's own wording; ``rule`` says what was broken and where the spec says so.
    Discord form-body errors also carry the JSON ``path`` and Discord's error ``code``;
    other Discord errors carry their top-level ``json_code``.
    """

    rule: str
    message: str
    status: int | None = 400
    path: tuple[str | int, ...] | None = None
    code: str = "BASE_TYPE_INVALID"
    json_code: int = 50035


class Checked(Protocol):
    """What a fake keeps for the checks: its violations and whether it checks at all."""

    violations: list[str]
    check_specs: bool


_watched: list[Checked] = []


def watch(fake: Checked) -> None:
    """Register a fake so the test's teardown asserts its traffic broke no rule.

    The specs are loaded here, so a missing one fails the test at once and plainly,
    not as a server error inside a request.
    """
    for spec in (TELEGRAM_SPEC, DISCORD_SPEC):
        if not spec.is_file():
            raise FileNotFoundError(f"{spec}: the chat API specs live in tests/specs "
                                    "(or set KLING_SPECS_DIR)")
    telegram_spec()
    discord_spec()
    _watched.append(fake)


def forget_watched() -> None:
    """Start a new test: fakes of earlier tests are no longer asserted."""
    _watched.clear()


def watched_violations() -> list[str]:
    """Every violation the fakes watched since the last ``forget_watched`` recorded."""
    return [violation for fake in _watched for violation in fake.violations]


class Refusal(web.HTTPException):
    """An error answer a handler raises: a JSON body with Content-Type exactly
    application/json, as the real services send it (discord.py parses JSON only then)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        super().__init__()
        self.body = json.dumps(body).encode()
        self.content_type = "application/json"
        self.charset = None


def _record(fake: Checked, request_line: str, problems: Iterable[Problem]) -> list[Problem]:
    """Write each problem to the fake's violations; return them."""
    found = list(problems)
    fake.violations.extend(f"{request_line}: {problem.rule}" for problem in found)
    return found


# --- Telegram -----------------------------------------------------------------------------

TELEGRAM_PRIMITIVES = {"String", "Integer", "Float", "Boolean", "InputFile"}
ARRAY_OF = "Array of "
LENGTH_RULE = re.compile(r"(\d+)-(\d+) (characters|bytes)")
LOWERCASE_RULE = "only lowercase English letters, digits and underscores"
# setWebhook's secret_token ("Only characters A-Z, a-z, 0-9, _ and - are allowed").
TOKEN_CHARSET_RULE = "Only characters A-Z, a-z, 0-9, _ and - are allowed"
# InlineKeyboardButton's optional fields that are not its action ("exactly one of the
# optional fields must be used to specify type of the button", core.telegram.org).
BUTTON_DECORATIONS = {"icon_custom_emoji_id", "style"}
# What Telegram answers for a broken limit, where its wording is known (else a generic one).
TELEGRAM_WORDING = {
    ("sendMessage", "text", "long"): "message is too long",
    ("sendMessage", "text", "short"): "message text is empty",
    ("editMessageText", "text", "long"): "MESSAGE_TOO_LONG",
    ("editMessageText", "text", "short"): "text must be non-empty",
    ("answerCallbackQuery", "text", "long"): "MESSAGE_TOO_LONG",
    ("*", "caption", "long"): "message caption is too long",
    ("InlineKeyboardButton", "callback_data", "long"): "BUTTON_DATA_INVALID",
    ("InlineKeyboardButton", "callback_data", "short"): "BUTTON_DATA_INVALID",
    ("BotCommand", "command", "long"): "BOT_COMMAND_INVALID",
    ("BotCommand", "command", "short"): "BOT_COMMAND_INVALID",
    ("setWebhook", "secret_token", "long"): "secret token is too long",
    ("setWebhook", "secret_token", "short"): "secret token must be non-empty",
    ("setWebhook", "secret_token", "charset"): "secret token contains unallowed characters",
}


@cache
def telegram_spec() -> dict[str, Any]:
    """The Bot API spec (methods and types), loaded once."""
    spec: dict[str, Any] = json.loads(TELEGRAM_SPEC.read_text())
    return spec


@cache
def _telegram_methods() -> dict[str, dict[str, Any]]:
    """Methods by lower-case name: Telegram's method names are case-insensitive."""
    return {name.lower(): method for name, method in telegram_spec()["methods"].items()}


def telegram_problems(method: str, params: Mapping[str, Any], files: Mapping[str, bytes]) -> list[Problem]:
    """Everything wrong with one Bot API call (params as the fake decoded them)."""
    spec = _telegram_methods().get(method.lower())
    if spec is None:
        return [Problem(f"unknown method {method!r}: not in the Bot API spec", "Not Found", status=404)]
    name = spec["name"]
    fields = {field["name"]: field for field in spec.get("fields", [])}
    problems: list[Problem] = []
    for key, value in params.items():
        if key in fields:
            problems += _field_problems(name, fields[key], value, key, params, top=True)
        else:
            problems.append(_unknown(name, key, spec["href"]))
    attached = json.dumps(dict(params))
    for key in files:
        if key not in fields and f"attach://{key}" not in attached:
            problems.append(_unknown(name, key, spec["href"]))
    for key, field in fields.items():
        if field["required"] and key not in params and key not in files:
            problems.append(Problem(f"required parameter {key!r} missing ({spec['href']})",
                                    f'Parameter "{key}" is required'))
    return problems


def _unknown(owner: str, key: str, href: str) -> Problem:
    """An unknown parameter or field: Telegram ignores it, so it never has an effect."""
    return Problem(f"unknown parameter {key!r} (not in {owner}), ignored by Telegram ({href})", "", status=None)


def _field_problems(owner: str, field: dict[str, Any], value: Any, where: str,
                    siblings: Mapping[str, Any], *, top: bool) -> list[Problem]:
    """Type, then the description's limits, of one field's value."""
    problems = _alternatives(field["types"], value, where, top=top)
    if problems:
        return problems
    return _limit_problems(owner, field, value, where, siblings)


def _alternatives(kinds: Iterable[str], value: Any, where: str, *, top: bool) -> list[Problem]:
    """The problems of value as the type it fits best (none if it is any of the types).

    The best fit is the type whose shape matches (known keys, required keys present), so
    an inline keyboard with a bad button is reported as that, not as a bad ForceReply.
    """
    results = []
    for kind in kinds:
        problems = _type_problems(kind, value, where, top=top)
        if not problems:
            return []
        results.append((_misfit(kind, value, top=top), _severity(problems), problems))
    return min(results, key=lambda result: result[:2])[2] if results else []


def _misfit(kind: str, value: Any, *, top: bool) -> int:
    """How badly value's outer shape misses type ``kind``: 0 fits, larger is worse."""
    mismatch = 1000
    if kind.startswith(ARRAY_OF):
        return 0 if isinstance(value, list) else mismatch
    if kind in TELEGRAM_PRIMITIVES:
        return 0 if _is_primitive(kind, value, top=top) else mismatch
    spec = telegram_spec()["types"].get(kind)
    if spec is None or not isinstance(value, dict):
        return mismatch
    if "subtypes" in spec:
        return min(_misfit(subtype, value, top=False) for subtype in spec["subtypes"])
    fields = {field["name"]: field for field in spec.get("fields", [])}
    unknown = sum(key not in fields for key in value)
    missing = sum(bool(field["required"]) and key not in value for key, field in fields.items())
    return unknown + missing


def _severity(problems: list[Problem]) -> tuple[int, int]:
    """Refusing problems weigh more than ignored ones."""
    return sum(p.status is not None for p in problems), len(problems)


def _type_problems(kind: str, value: Any, where: str, *, top: bool) -> list[Problem]:
    """Whether value has the spec type ``kind``; objects are checked field by field.

    Top-level parameters arrive as form text that Telegram converts to the declared type
    (any text is a String, "true"/"1" a Boolean), nested ones as JSON with strict types.
    """
    if kind.startswith(ARRAY_OF):
        if not isinstance(value, list):
            return [_wrong_type(where, kind, value)]
        item_kind = kind.removeprefix(ARRAY_OF)
        return [p for i, item in enumerate(value) for p in _type_problems(item_kind, item, f"{where}[{i}]", top=False)]
    if kind in TELEGRAM_PRIMITIVES:
        return [] if _is_primitive(kind, value, top=top) else [_wrong_type(where, kind, value)]
    return _object_problems(kind, value, where)


def _is_primitive(kind: str, value: Any, *, top: bool) -> bool:
    """Whether value passes as the primitive type ``kind``."""
    if kind == "String":
        return top or isinstance(value, str)
    if kind == "Integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "Float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "Boolean":
        return isinstance(value, bool) or (top and value in (0, 1, "true", "false", "True", "False"))
    return isinstance(value, str) and (top or value.startswith("attach://"))  # InputFile


def _wrong_type(where: str, kind: str, value: Any) -> Problem:
    return Problem(f"{where} must be {kind}, got {json.dumps(value)[:80]}",
                   f"can't parse {where}: expected {kind}")


def _object_problems(kind: str, value: Any, where: str) -> list[Problem]:
    """An object of the spec type ``kind``: its fields, then rules of the type."""
    spec = telegram_spec()["types"].get(kind)
    if spec is None:
        return [Problem(f"{where}: type {kind} is not in the spec", f"can't parse {where}")]
    if not isinstance(value, dict):
        return [_wrong_type(where, kind, value)]
    if "subtypes" in spec:
        return _alternatives(spec["subtypes"], value, where, top=False)
    fields = {field["name"]: field for field in spec.get("fields", [])}
    problems: list[Problem] = []
    for key, item in value.items():
        if key in fields:
            problems += _field_problems(kind, fields[key], item, f"{where}.{key}", value, top=False)
        else:
            problems.append(_unknown(kind, f"{where}.{key}", spec["href"]))
    for key, field in fields.items():
        if field["required"] and key not in value:
            problems.append(Problem(f"{where}.{key} is required in {kind} ({spec['href']})",
                                    f"can't parse {where}: field \"{key}\" must be present"))
    if kind == "InlineKeyboardButton":
        problems += _button_problems(fields, value, where, spec["href"])
    return problems


def _button_problems(fields: Mapping[str, Any], button: Mapping[str, Any], where: str, href: str) -> list[Problem]:
    """An inline keyboard button must have exactly one of its optional action fields."""
    actions = [key for key, field in fields.items()
               if not field["required"] and key not in BUTTON_DECORATIONS and key in button]
    if len(actions) == 1:
        return []
    if not actions:
        message = "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard"
    else:
        message = "can't parse inline keyboard button: exactly one of the optional fields must be used"
    return [Problem(f"{where} has action fields {actions}; exactly one must be used ({href})", message)]


def _limit_problems(owner: str, field: dict[str, Any], value: Any, where: str,
                    siblings: Mapping[str, Any]) -> list[Problem]:
    """The "N-M characters|bytes" and character-set rules stated in a field's description."""
    if "String" not in field["types"]:
        return []
    description: str = field["description"]
    text = value if isinstance(value, str) else json.dumps(value)
    problems: list[Problem] = []
    match = LENGTH_RULE.search(description)
    parsed_later = "after entit" in description and "parse_mode" in siblings  # counted after parsing
    if match and not parsed_later:
        low, high, unit = int(match[1]), int(match[2]), match[3]
        size = len(text.encode()) if unit == "bytes" else len(text.encode("utf-16-le")) // 2
        if not low <= size <= high:
            side = "long" if size > high else "short"
            wording = (TELEGRAM_WORDING.get((owner, field["name"], side))
                       or TELEGRAM_WORDING.get(("*", field["name"], side), f"{where} must be {low}-{high} {unit}"))
            problems.append(Problem(f'{where} is {size} {unit}; {owner}.{field["name"]}: "{match[0]}"', wording))
    if LOWERCASE_RULE in description and not re.fullmatch(r"[a-z0-9_]*", text):
        wording = TELEGRAM_WORDING.get((owner, field["name"], "long"), f"{where} has forbidden characters")
        problems.append(Problem(f'{where} is {text!r}; {owner}.{field["name"]}: "{LOWERCASE_RULE}"', wording))
    if TOKEN_CHARSET_RULE in description and not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        wording = TELEGRAM_WORDING.get((owner, field["name"], "charset"), f"{where} has forbidden characters")
        problems.append(Problem(f'{where} has other characters; {owner}.{field["name"]}: "{TOKEN_CHARSET_RULE}"',
                                wording))
    return problems


def telegram_refusal(fake: Checked, method: str, params: Mapping[str, Any],
                     files: Mapping[str, bytes]) -> Refusal | None:
    """Check one call: record its problems on the fake; the error Telegram would answer, if any."""
    if not fake.check_specs:
        return None
    problems = _record(fake, f"Telegram {method}", telegram_problems(method, params, files))
    refusing = [p for p in problems if p.status is not None]
    if not refusing:
        return None
    first = refusing[0]
    assert first.status is not None
    description = first.message if first.status == 404 else f"Bad Request: {first.message}"
    return Refusal(first.status, {"ok": False, "error_code": first.status, "description": description})


# --- Discord ------------------------------------------------------------------------------

COMPONENTS_V2 = 1 << 15  # message flag: components are layout components, not action rows
MAX_CONTENT = 2000
MAX_ACTION_ROWS = 5
MAX_ROW_ITEMS = 5
MAX_SELECT_OPTIONS = 25
CUSTOM_ID = (1, 100)
MAX_CHOICE_VALUE = 100  # "max 100 characters if string" (docs: autocomplete choices)
BUTTON, LINK_STYLE, PREMIUM_STYLE = 2, 5, 6
# style -> (the field it needs, the fields it must not have); None: the styles with a custom id
BUTTON_FIELDS: dict[int | None, tuple[str, tuple[str, ...]]] = {
    PREMIUM_STYLE: ("sku_id", ("custom_id", "label", "emoji", "url")),
    LINK_STYLE: ("url", ("custom_id", "sku_id")),
    None: ("custom_id", ("url", "sku_id")),
}
TRUE_WORDS, FALSE_WORDS = {"true", "True", "1"}, {"false", "False", "0"}  # docs: boolean query strings
DISCORD_ERROR_CODES = {  # jsonschema keyword -> Discord's form error code
    "maxLength": "BASE_TYPE_MAX_LENGTH", "maxItems": "BASE_TYPE_MAX_LENGTH",
    "minLength": "BASE_TYPE_MIN_LENGTH", "minItems": "BASE_TYPE_MIN_LENGTH",
    "required": "BASE_TYPE_REQUIRED", "enum": "BASE_TYPE_CHOICES",
    "maximum": "NUMBER_TYPE_MAX", "minimum": "NUMBER_TYPE_MIN",
}


@dataclass(frozen=True)
class Route:
    """One path template of the OpenAPI document and its operations by method."""

    template: str
    pattern: re.Pattern[str]
    operations: dict[str, dict[str, Any]]


@cache
def discord_spec() -> dict[str, Any]:
    """The pruned Discord OpenAPI document, loaded once.

    One leniency of the real API that the document leaves out: a snowflake may be sent as
    an integer (discord.py sends attachment ids and allowed_mentions users so, and Discord
    takes them), so SnowflakeType also admits a non-negative integer.
    """
    spec: dict[str, Any] = json.loads(DISCORD_SPEC.read_text())
    schemas = spec["components"]["schemas"]
    schemas["SnowflakeType"] = {"anyOf": [schemas["SnowflakeType"], {"type": "integer", "minimum": 0}]}
    return spec


@cache
def discord_routes() -> list[Route]:
    """The document's routes, fixed segments (@me, @original) before parameters."""
    routes = []
    for template, item in discord_spec()["paths"].items():
        regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        operations = {method.upper(): op for method, op in item.items() if method != "parameters"}
        routes.append(Route(template, re.compile(regex), operations))
    return sorted(routes, key=lambda route: route.template.count("{"))


def discord_route(path: str) -> Route | None:
    """The route an API path (without the /api/v10 prefix) belongs to."""
    return next((route for route in discord_routes() if route.pattern.fullmatch(path)), None)


def discord_response_headers(method: str, path: str, status: int) -> set[str]:
    """The headers the document says an answer of ``method path`` (with the /api/v10 prefix
    or without) with ``status`` carries, e.g. the X-RateLimit-* ones."""
    route = discord_route(path.removeprefix(DISCORD_API_PREFIX))
    operation = route.operations.get(method.upper(), {}) if route else {}
    return set(operation.get("responses", {}).get(str(status), {}).get("headers", {}))


HEADER_TYPES = {"integer": re.compile(r"-?\d+"), "number": re.compile(r"-?\d+(\.\d+)?"),
                "string": re.compile(r".+")}


def discord_header_problems(declared: Iterable[str], headers: Mapping[str, str]) -> list[str]:
    """Each declared header an answer lacks or whose value is not of the document's type."""
    problems = []
    for name in sorted(declared):
        kind = discord_spec()["components"]["headers"][name]["schema"]["type"]
        value = headers.get(name)
        if value is None:
            problems.append(f"{name}: missing")
        elif not HEADER_TYPES[kind].fullmatch(value):
            problems.append(f"{name}: {value!r} is not an {kind}")
    return problems


@cache
def _body_validator(template: str, method: str) -> Draft202012Validator | None:
    """A validator of an operation's JSON request body ($refs resolved in the document)."""
    operation = discord_spec()["paths"][template][method.lower()]
    if "application/json" not in operation.get("requestBody", {}).get("content", {}):
        return None
    registry: Registry[Any] = Registry().with_resource(
        DISCORD_DOC_URI, Resource.from_contents(discord_spec(), default_specification=DRAFT202012))
    pointer = "/".join(part.replace("~", "~0").replace("/", "~1") for part in (
        "paths", template, method.lower(), "requestBody", "content", "application/json", "schema"))
    return Draft202012Validator({"$ref": f"{DISCORD_DOC_URI}#/{pointer}"}, registry=registry)


def _form_error(path: Iterable[str | int], code: str, message: str, rule: str) -> Problem:
    return Problem(rule, message, path=tuple(path), code=code)


def _meant(error: ValidationError) -> ValidationError:
    """Into anyOf/oneOf errors, down the branch the instance was meant for: the one that
    does not say the instance is another kind of thing (type, or its "type" tag)."""
    while error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        meant: list[list[ValidationError]] = [errors for errors in branches.values()
                                              if not any(map(_other_kind, errors))]
        if not meant:
            return error
        fewest = min(meant, key=lambda errors: len(errors))
        error = max(fewest, key=lambda sub: len(sub.absolute_path))
    return error


def _other_kind(error: ValidationError) -> bool:
    """Whether an error says the instance is of another JSON type or another tagged variant."""
    if error.validator == "type" and not error.relative_path:
        return True
    return error.validator in ("enum", "const") and list(error.relative_path) == ["type"]


def _schema_problem(error: ValidationError, where: str) -> Problem:
    """A jsonschema error as Discord words a form error."""
    error = _meant(error)
    path = list(error.absolute_path)
    keyword = str(error.validator)
    limit = error.validator_value
    if keyword == "required" and isinstance(error.instance, dict):
        path.append(next(key for key in limit if key not in error.instance))
        message = "This field is required"
    elif keyword in ("maxLength", "maxItems"):
        message = f"Must be {limit} or fewer in length."
    elif keyword in ("minLength", "minItems"):
        message = f"Must be {limit} or more in length."
    elif keyword == "enum":
        message = f"Value must be one of {tuple(limit)}."
    elif keyword in ("anyOf", "oneOf"):
        message = "Value matches none of the allowed forms."
    else:
        message = error.message[:200]
    dotted = ".".join(map(str, path)) or "body"
    return _form_error(path, DISCORD_ERROR_CODES.get(keyword, "BASE_TYPE_INVALID"), message,
                       f"{dotted}: {message} (OpenAPI {where}, {keyword})")


def _message_part(template: str, body: Any) -> tuple[tuple[str, ...], Any] | None:
    """Where a request body holds a message (content, components), if it does."""
    if not isinstance(body, dict):
        return None
    if template.endswith("/callback"):
        return (("data",), body.get("data")) if body.get("type") in (4, 5, 7) else None
    if "/messages" in template or template == "/webhooks/{webhook_id}/{webhook_token}":
        return (), body
    return None


def _message_problems(prefix: tuple[str, ...], message: Any) -> list[Problem]:
    """Message limits Discord enforces beyond the schemas: content, rows, custom ids, options."""
    if not isinstance(message, dict):
        return []
    problems = []
    content = message.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        problems.append(_form_error((*prefix, "content"), "BASE_TYPE_MAX_LENGTH",
                                    f"Must be {MAX_CONTENT} or fewer in length.",
                                    f"content is {len(content)} characters, Discord allows {MAX_CONTENT}"))
    components = message.get("components") or []
    if not (message.get("flags") or 0) & COMPONENTS_V2:
        problems += _rows_problems((*prefix, "components"), components)
    problems += _component_problems((*prefix, "components"), components)
    return problems


def _too_many(path: tuple[str | int, ...], items: Any, limit: int, what: str) -> list[Problem]:
    if isinstance(items, list) and len(items) > limit:
        return [_form_error(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.",
                            f"{len(items)} {what}, Discord allows {limit}")]
    return []


def _rows_problems(path: tuple[str | int, ...], rows: Any) -> list[Problem]:
    """At most 5 action rows of at most 5 components each."""
    problems = _too_many(path, rows, MAX_ACTION_ROWS, "action rows")
    for i, row in enumerate(rows if isinstance(rows, list) else []):
        if isinstance(row, dict):
            problems += _too_many((*path, i, "components"), row.get("components"), MAX_ROW_ITEMS,
                                  "components in an action row")
    return problems


def _component_problems(path: tuple[str | int, ...], components: Any) -> list[Problem]:
    """custom_id 1-100 characters and at most 25 select options, in nested components too."""
    problems: list[Problem] = []
    for i, component in enumerate(components if isinstance(components, list) else []):
        if not isinstance(component, dict):
            continue
        custom_id = component.get("custom_id")
        low, high = CUSTOM_ID
        if isinstance(custom_id, str) and not low <= len(custom_id) <= high:
            problems.append(_form_error((*path, i, "custom_id"), "BASE_TYPE_BAD_LENGTH",
                                        f"Must be between {low} and {high} in length.",
                                        f"custom_id is {len(custom_id)} characters, Discord allows {low}-{high}"))
        problems += _too_many((*path, i, "options"), component.get("options"), MAX_SELECT_OPTIONS, "select options")
        if component.get("type") == BUTTON:
            problems += _button_shape_problems((*path, i), component)
        problems += _component_problems((*path, i, "components"), component.get("components"))
    return problems


def _button_shape_problems(path: tuple[str | int, ...], button: Mapping[str, Any]) -> list[Problem]:
    """The fields a button must and must not have, by its style."""
    style = button.get("style")
    needs, forbids = BUTTON_FIELDS.get(style, BUTTON_FIELDS[None]) if isinstance(style, int) else ("", ())
    problems = []
    if needs and button.get(needs) is None:
        problems.append(_form_error((*path, needs), "BASE_TYPE_REQUIRED", "This field is required",
                                    f"a button of style {style} needs {needs} (components reference, Button)"))
    for field in forbids:
        if button.get(field) is not None:
            problems.append(_form_error((*path, field), "COMPONENT_INVALID_FIELD",
                                        f"A button of style {style} cannot have {field}.",
                                        f"a button of style {style} cannot have {field} "
                                        "(components reference, Button)"))
    return problems


def _choice_problems(body: Any) -> list[Problem]:
    """Autocomplete choices: a string value of at most 100 characters."""
    choices = (body.get("data") or {}).get("choices") if isinstance(body, dict) and body.get("type") == 8 else None
    problems = []
    for i, choice in enumerate(choices if isinstance(choices, list) else []):
        value = choice.get("value") if isinstance(choice, dict) else None
        if isinstance(value, str) and len(value) > MAX_CHOICE_VALUE:
            problems.append(_form_error(("data", "choices", i, "value"), "BASE_TYPE_MAX_LENGTH",
                                        f"Must be {MAX_CHOICE_VALUE} or fewer in length.",
                                        f"choice value is {len(value)} characters, Discord allows {MAX_CHOICE_VALUE}"))
    return problems


class DiscordRules:
    """The Discord checks of one fake, with the state they need: which interactions have
    had their initial response, and each interaction token's upload limit."""

    def __init__(self) -> None:
        self.acknowledged: set[str] = set()
        self.upload_limits: dict[str, int] = {}  # interaction token -> attachment_size_limit
        self.channel_upload_limit = CHANNEL_UPLOAD_LIMIT

    def saw_event(self, event: str, data: Mapping[str, Any]) -> None:
        """Learn an interaction's upload limit from the gateway event that delivers it."""
        if event == "INTERACTION_CREATE" and "token" in data and "attachment_size_limit" in data:
            self.upload_limits[str(data["token"])] = int(data["attachment_size_limit"])

    def problems(self, method: str, path: str, body: Any, uploads: Iterable[bytes],
                 query: Mapping[str, str] | None = None) -> list[Problem]:
        """Everything wrong with one API request (path without the /api/v10 prefix)."""
        route = discord_route(path)
        if route is None:
            return [Problem(f"no route {path} in the OpenAPI document", "404: Not Found", status=404, json_code=0)]
        if method not in route.operations:
            return [Problem(f"{method} is not an operation of {route.template}", "405: Method Not Allowed",
                            status=405, json_code=0)]
        size = sum(len(data) for data in uploads)
        limit = self._upload_limit(route, path)
        if size > limit:
            return [Problem(f"uploads total {size} bytes, the limit here is {limit}", "Request entity too large",
                            status=413, json_code=40005)]
        problems = _query_problems(route, method, query or {}) + self._body_problems(route, method, body)
        if route.template.endswith("/callback") and not problems:
            interaction = path.split("/")[2]
            if interaction in self.acknowledged:
                return [Problem("a second initial response to one interaction",
                                "Interaction has already been acknowledged.", json_code=40060)]
            self.acknowledged.add(interaction)
        return problems

    def _upload_limit(self, route: Route, path: str) -> int:
        """The interaction's attachment_size_limit for its webhook; else the channel limit."""
        parts = path.split("/")
        if route.template.startswith(("/interactions/", "/webhooks/")) and len(parts) > 3:
            return self.upload_limits.get(parts[3], self.channel_upload_limit)
        return self.channel_upload_limit

    @staticmethod
    def _body_problems(route: Route, method: str, body: Any) -> list[Problem]:
        """The body against the operation's schema, then the limits the schemas leave out."""
        where = f"{method} {route.template}"
        validator = _body_validator(route.template, method)
        problems: list[Problem] = []
        if validator is not None:
            required = route.operations[method].get("requestBody", {}).get("required", False)
            if body is None and required:
                problems.append(_form_error((), "BASE_TYPE_REQUIRED", "This field is required",
                                            f"a JSON body is required (OpenAPI {where})"))
            elif body is not None and (error := next(validator.iter_errors(body), None)) is not None:
                problems.append(_schema_problem(error, where))
        part = _message_part(route.template, body)
        if part is not None:
            problems += _message_problems(*part)
        problems += _choice_problems(body) if route.template.endswith("/callback") else []
        return _first_per_path(problems)


def _query_problems(route: Route, method: str, query: Mapping[str, str]) -> list[Problem]:
    """Each declared query parameter's value against its schema (Discord ignores undeclared ones)."""
    declared = {param["name"]: param for param in route.operations[method].get("parameters", [])
                if param.get("in") == "query"}
    problems = []
    for name, value in query.items():
        if name in declared and (wrong := _query_value_problem(_resolved(declared[name]["schema"]), value)):
            problems.append(_form_error((name,), "BASE_TYPE_INVALID", wrong,
                                        f"query {name}={value!r}: {wrong} (OpenAPI {method} {route.template})"))
    return problems


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its $ref (one level, as the parameters use them) looked up in the document."""
    while "$ref" in schema:
        schema = discord_spec()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _query_value_problem(schema: dict[str, Any], value: str) -> str | None:
    """Why a query string value does not have the parameter's type, or None."""
    if "oneOf" in schema or "anyOf" in schema:  # e.g. sku_ids: a string or an array of snowflakes
        branches = [_resolved(branch) for branch in schema.get("oneOf", schema.get("anyOf", []))]
        if any(branch.get("type") == "array" for branch in branches):
            return None if all(re.fullmatch(r"\d{1,20}", part) for part in value.split(",")) \
                else "Value is not a list of snowflakes."
        return None if any(_query_value_problem(branch, value) is None for branch in branches) \
            else "Value matches none of the allowed forms."
    kind = schema.get("type")
    if kind == "boolean":
        return None if value in TRUE_WORDS | FALSE_WORDS else "Must be either true or false."
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", value):
            return "Value is not int."
        number = int(value)
        if "minimum" in schema and number < schema["minimum"]:
            return f"int value should be greater than or equal to {schema['minimum']}."
        if "maximum" in schema and number > schema["maximum"]:
            return f"int value should be less than or equal to {schema['maximum']}."
        return None
    if kind == "string" and schema.get("pattern"):
        return None if re.fullmatch(schema["pattern"], value) else "Value is not snowflake."
    return None


def _first_per_path(problems: Iterable[Problem]) -> list[Problem]:
    """One problem per JSON path (the schema and the extra limits may flag the same field)."""
    kept: dict[tuple[str | int, ...] | None, Problem] = {}
    for problem in problems:
        kept.setdefault(problem.path, problem)
    return list(kept.values())


def discord_refusal(fake: Checked, rules: DiscordRules, method: str, path: str, body: Any,
                    uploads: Iterable[bytes], query: Mapping[str, str] | None = None) -> Refusal | None:
    """Check one request: record its problems on the fake; the error Discord would answer, if any."""
    if not fake.check_specs or not path.startswith(f"{DISCORD_API_PREFIX}/"):
        return None  # the gateway socket and CDN downloads are not the HTTP API
    api_path = path.removeprefix(DISCORD_API_PREFIX)
    problems = _record(fake, f"Discord {method} {api_path}", rules.problems(method, api_path, body, uploads, query))
    if not problems:
        return None
    form = [p for p in problems if p.path is not None]
    if not form:
        first = problems[0]
        return Refusal(first.status or 400, {"code": first.json_code, "message": first.message})
    errors: dict[str, Any] = {}
    for problem in form:
        node = errors
        for key in problem.path or ():
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": problem.code, "message": problem.message})
    return Refusal(400, {"code": 50035, "message": "Invalid Form Body", "errors": errors})

"""aiohttp client for the WaveSpeed REST API: submit, results, media upload, downloads,
and the account's reads (the model listing, price quotes, the balance).

Errors are typed so the engine can decide: retry later, refund, or tell the user.
Submits are never retried here: only the caller knows whether a paid task may
already exist (``SubmitUncertain``) or surely does not (``NotSubmitted``). Result
checks are retried on 429, 5xx and connection errors with capped, jittered backoff.
The API key is sent only to the configured API origin and never appears in errors.
Videos are downloaded only from WaveSpeed's hosts (``download_hosts`` and the API's own
origin), redirects included: each hop is checked before it is requested.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from bot import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

MODERATION_CODES = {1200}
BAD_INPUT_CODES = {1400, 1401, 1402}
TASK_FAILED_CODES = {1403, 1405}  # the user's or the model's fault: no retry
UNAVAILABLE_CODE = 5003
HISTORY_PAGE = 100  # the largest page the history endpoint serves
MAX_REDIRECTS = 5  # hops a video download may take, each one checked
REDIRECTS = (301, 302, 303, 307, 308)


class WaveSpeedError(Exception):
    """Base class; ``str()`` is safe to log and show (never holds the key)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class AuthError(WaveSpeedError):
    """The API key was refused (401/403)."""


class BadRequest(WaveSpeedError):
    """The API refused the inputs (1400/1401/1402, other 4xx)."""


class Moderated(BadRequest):
    """The content filter refused the inputs (1200)."""


class Transient(WaveSpeedError):
    """Worth trying again later: 429, 5xx, connection trouble."""


class RateLimited(Transient):
    def __init__(self, message: str, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after  # seconds the API asked us to wait, if it said


class NotSubmitted(Transient):
    """The submit surely created no task (refused, rate limited, never connected)."""

    def __init__(self, message: str, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class DownloadRefused(WaveSpeedError):
    """An output URL (or a redirect of it) names a host that is not WaveSpeed's; ``host``
    is that host (never the whole URL: its query may be signed), None when there is none."""

    def __init__(self, message: str, *, host: str | None = None):
        super().__init__(message)
        self.host = host


class SubmitUncertain(WaveSpeedError):
    """The submit may or may not have created a task (timeout, 5xx after sending)."""


@dataclass(frozen=True)
class Prediction:
    id: str
    status: str  # created | processing | completed | failed (| cancelled | timeout)
    result_url: str | None = None
    outputs: list[str] = field(default_factory=list)
    nsfw: list[bool] = field(default_factory=list)
    error: str = ""
    inference_ms: int | None = None
    model: str = ""
    created_at: float | None = None  # Unix time, from the API's ISO 8601 created_at

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Prediction:
        """From the API's prediction object; a field of an unexpected type counts as absent
        (the caller sees no video, no id: asked again, never a crash that refunds a made video)."""
        urls, timings = _dict(data.get("urls")), _dict(data.get("timings"))
        inference = timings.get("inference")
        return cls(
            id=_text(data.get("id")),
            status=_text(data.get("status")) or "created",
            result_url=_text(urls.get("get")) or None,
            outputs=[o for o in _list(data.get("outputs")) if isinstance(o, str) and o],
            nsfw=[bool(x) for x in _list(data.get("has_nsfw_contents"))],
            error=_text(data.get("error")),
            inference_ms=int(inference) if isinstance(inference, (int, float))
            and not isinstance(inference, bool) and 0 <= inference < 10**9 else None,
            model=_text(data.get("model")),
            created_at=_unix_time(data.get("created_at")),
        )

    def to_data(self) -> dict[str, Any]:
        """The API's prediction object again (what a webhook delivered, as stored)."""
        return {"id": self.id, "status": self.status, "urls": {"get": self.result_url},
                "outputs": self.outputs, "has_nsfw_contents": self.nsfw, "error": self.error,
                "timings": {"inference": self.inference_ms}, "model": self.model,
                "created_at": iso_time(self.created_at) if self.created_at is not None else None}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value) if isinstance(value, int) and \
        not isinstance(value, bool) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def backoff(attempt: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Delay before retry number ``attempt`` (0-based): exponential, capped, jittered."""
    return float(min(cap, base * 2 ** attempt) * random.uniform(0.5, 1.0))


class WaveSpeedClient:
    def __init__(self, base_url: str, api_key: str, *, request_timeout: float = 60.0,
                 result_retries: int = 4, retry_cap: float = 10.0,
                 session: aiohttp.ClientSession | None = None, download_hosts: Iterable[str] = ()):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._origin = _origin(self.base_url)
        self._download_hosts = tuple(host.lower() for host in download_hosts)
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._result_retries = result_retries
        self._retry_cap = retry_cap
        self._session = session
        self._owns_session = session is None

    def __repr__(self) -> str:  # keeps the key out of reprs in tracebacks
        return f"WaveSpeedClient({self.base_url!r})"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # The trace times every request for /metrics (bot.metrics), whatever call makes it.
            self._session = aiohttp.ClientSession(timeout=self._timeout, trace_configs=[metrics.wavespeed_trace()])
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()

    def _headers(self, url: str) -> dict[str, str]:
        # Only the API itself gets the key: a result URL on another host would
        # otherwise receive our secret.
        if self._api_key and self._same_origin(url):
            return {"Authorization": f"Bearer {self._api_key}"}
        return {}

    def _same_origin(self, url: str | URL) -> bool:
        return self._origin is not None and _origin(url) == self._origin

    def may_download(self, url: str | URL) -> bool:
        """Whether a video may be fetched from this URL: the API's own origin, or https on
        one of ``download_hosts`` ("*.example.com" matches its subdomains), no user info."""
        if self._same_origin(url):
            return True
        parsed = url if isinstance(url, URL) else _parse(url)
        host = (parsed.host or "").lower() if parsed is not None else ""
        if parsed is None or parsed.scheme != "https" or not host or parsed.user or parsed.password:
            return False
        return any(host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
                   for pattern in self._download_hosts)

    # --- calls --------------------------------------------------------------

    async def submit(self, model_id: str, inputs: dict[str, Any], *, webhook: str | None = None) -> Prediction:
        """Create a task (WaveSpeed reports its end to ``webhook`` when given).
        Raises NotSubmitted, SubmitUncertain, AuthError or BadRequest."""
        url = f"{self.base_url}/api/v3/{model_id}"
        query = {"webhook": webhook} if webhook else None
        try:
            async with self.session.post(url, json=inputs, params=query, headers=self._headers(url)) as resp:
                status, body = resp.status, await _json_or_none(resp)
                retry_after = _retry_after(resp)
        except aiohttp.ClientConnectorError as err:
            raise NotSubmitted(f"cannot reach WaveSpeed ({type(err).__name__})") from None
        except (TimeoutError, aiohttp.ClientError) as err:
            raise SubmitUncertain(f"no answer to the submit ({type(err).__name__})") from None
        try:
            data = _unwrap(status, body, retry_after)
        except RateLimited as err:
            raise NotSubmitted(str(err), err.retry_after, status=err.status, code=err.code) from None
        except Transient as err:
            if status == 503 or err.code == UNAVAILABLE_CODE:  # refused at the door
                raise NotSubmitted(str(err), status=status, code=err.code) from None
            raise SubmitUncertain(str(err), status=err.status, code=err.code) from None
        prediction = Prediction.from_data(data)
        if not prediction.id:
            raise SubmitUncertain("the submit answer had no task id", status=status)
        return prediction

    async def result(self, prediction_id: str, result_url: str | None = None) -> Prediction:
        """The task's current state; retries transient failures, then raises Transient."""
        url = result_url or f"{self.base_url}/api/v3/predictions/{prediction_id}/result"
        if not self._same_origin(url):
            url = f"{self.base_url}/api/v3/predictions/{prediction_id}/result"

        async def check() -> Prediction:
            async with self.session.get(url, headers=self._headers(url)) as resp:
                data = _unwrap(resp.status, await _json_or_none(resp), _retry_after(resp))
            return Prediction.from_data(data)

        return await self._retrying(f"result check for {prediction_id}", check)

    async def webhook_secret(self) -> str:
        """The account's webhook signing secret (``whsec_...``)."""
        return await self._get("webhook secret", "/api/v3/webhook/secret", _secret)

    async def history(self, model_id: str, created_after: float, created_before: float,
                      *, max_pages: int = 10) -> list[Prediction]:
        """Tasks of a model created in a time window (WaveSpeed keeps 7 days), newest first.

        The items carry no inputs: this finds a task whose submit answer was lost.
        """
        url = f"{self.base_url}/api/v3/predictions"
        found: list[Prediction] = []
        for page in range(1, max_pages + 1):
            query = {"page": page, "page_size": HISTORY_PAGE, "model": model_id,
                     "created_after": iso_time(created_after), "created_before": iso_time(created_before)}

            async def fetch(query: dict[str, Any] = query) -> list[dict[str, Any]]:
                async with self.session.post(url, json=query, headers=self._headers(url)) as resp:
                    data = _unwrap(resp.status, await _json_or_none(resp), _retry_after(resp))
                items = data.get("items")
                if not isinstance(items, list):
                    raise Transient("the history answer had no items")
                return [item for item in items if isinstance(item, dict)]

            items = await self._retrying(f"history of {model_id}", fetch)
            found += [Prediction.from_data(item) for item in items]
            if len(items) < HISTORY_PAGE:
                break
        return found

    async def models(self) -> list[dict[str, Any]]:
        """Every model the account can run (``GET /api/v3/models``), in WaveSpeed's shape
        (model_id, name, base_price, type, api_schema...); entries that are not objects are dropped."""
        return await self._get("model listing", "/api/v3/models", _listing)

    async def price(self, model_id: str, inputs: dict[str, Any]) -> Decimal:
        """WaveSpeed's quote in USD for running ``model_id`` on exactly these inputs
        (``POST /api/v3/model/price``; free, creates no task). Raises BadRequest when the
        API refuses the inputs, WaveSpeedError when the answer carries no usable price."""
        url = f"{self.base_url}/api/v3/model/price"

        async def quote() -> Decimal:
            body = {"model_id": model_id, "inputs": inputs}
            async with self.session.post(url, json=body, headers=self._headers(url)) as resp:
                data = _unwrap(resp.status, await _json_or_none(resp), _retry_after(resp))
            return _usd_price(data)

        return await self._retrying(f"price of {model_id}", quote)

    async def balance(self) -> Decimal:
        """The account's balance in USD: ``GET /api/v3/balance``, or, where that path is
        not served (404), the newer ``GET /api/v3/account/balance`` (bare ``{balance, currency}``)."""
        try:
            return await self._get("balance", "/api/v3/balance", _balance)
        except WaveSpeedError as err:
            if 404 not in (err.status, err.code):
                raise
        log.info("GET /api/v3/balance is not served here; asking /api/v3/account/balance")
        return await self._get("balance", "/api/v3/account/balance", _balance, bare=True)

    async def _get(self, what: str, path: str, parse: Callable[[Any], T], *, bare: bool = False) -> T:
        """A retried GET of an API path, its ``data`` turned into the result by ``parse`` (with
        ``bare``: an answer without an envelope, as some newer endpoints give, is the data)."""
        url = f"{self.base_url}{path}"

        async def fetch() -> T:
            async with self.session.get(url, headers=self._headers(url)) as resp:
                status, body, retry_after = resp.status, await _json_or_none(resp), _retry_after(resp)
            if bare and status == 200 and isinstance(body, dict) and not {"code", "data"} & body.keys():
                return parse(body)
            return parse(_envelope_data(status, body, retry_after))

        return await self._retrying(what, fetch)

    async def upload(self, data: bytes, filename: str, mime: str) -> str:
        """Upload media; returns the URL WaveSpeed can read it from."""
        url = f"{self.base_url}/api/v3/media/upload/binary"

        async def send() -> str:
            form = aiohttp.FormData()
            form.add_field("file", data, filename=filename, content_type=mime)
            async with self.session.post(url, data=form, headers=self._headers(url)) as resp:
                body = _unwrap(resp.status, await _json_or_none(resp), _retry_after(resp))
            if not body.get("download_url"):
                raise BadRequest("the upload answer had no download_url")
            return str(body["download_url"])

        return await self._retrying(f"upload of {filename}", send)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run an idempotent request, retrying 429/5xx/connection errors with backoff."""
        attempt = 0
        while True:
            try:
                return await call()
            except (TimeoutError, aiohttp.ClientError) as err:
                failure: Transient = Transient(f"{what} failed ({type(err).__name__})")
            except Transient as err:
                failure = err
            if attempt >= self._result_retries:
                raise failure
            delay = backoff(attempt, cap=self._retry_cap)
            if isinstance(failure, RateLimited) and failure.retry_after:
                delay = min(max(delay, failure.retry_after), self._retry_cap)
            log.info("%s: %s; retrying in %.1fs", what, failure, delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def download(self, url: str, dest: Path, *, max_bytes: int = 2 << 30) -> int:
        """Stream an output file to ``dest`` (atomically); returns its size in bytes.
        Raises DownloadRefused for a URL (or redirect) off WaveSpeed's hosts."""
        part = dest.with_suffix(dest.suffix + ".part")
        size = 0
        try:
            # No total limit (a large video may take long), but a stalled one fails.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout.total,
                                            sock_read=self._timeout.total)
            async with await self._open_output(url, timeout) as resp:
                if resp.status != 200:
                    error = Transient if resp.status == 429 or resp.status >= 500 else WaveSpeedError
                    raise error(f"video download answered HTTP {resp.status}", status=resp.status)
                with part.open("wb") as out:
                    async for chunk in resp.content.iter_chunked(1 << 16):
                        size += len(chunk)
                        if size > max_bytes:
                            raise WaveSpeedError("the video is larger than the bot accepts")
                        out.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as err:
            part.unlink(missing_ok=True)
            raise Transient(f"video download failed ({type(err).__name__})") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        if size == 0:
            part.unlink(missing_ok=True)
            raise Transient("the video download was empty")
        part.replace(dest)
        return size

    async def _open_output(self, url: str, limits: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """The response of the last hop, redirects followed by hand: every hop is checked
        against the download hosts before it is requested, and the key goes only to the API."""
        target = _parse(url)
        for _ in range(MAX_REDIRECTS + 1):
            if target is None or not self.may_download(target):
                host = url_host(target) if target is not None else None
                log.warning("refused to download a video from %s: not one of WaveSpeed's hosts", host)
                raise DownloadRefused(f"the video's address is not on WaveSpeed's hosts ({host})", host=host)
            resp = await self.session.get(target, headers=self._headers(str(target)), timeout=limits,
                                          allow_redirects=False)
            location = resp.headers.get("Location")
            if resp.status not in REDIRECTS or not location:
                return resp
            resp.release()
            target = _join(target, location)
        raise DownloadRefused("the video's address redirected too often")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _parse(url: str) -> URL | None:
    """A URL as aiohttp will request it (None: unparseable)."""
    try:
        return _decodable(URL(url))
    except (TypeError, ValueError):
        return None


def _join(base: URL, location: str) -> URL | None:
    try:
        return _decodable(base.join(URL(location)))
    except (TypeError, ValueError):
        return None


def _decodable(parsed: URL) -> URL | None:
    """The URL, if absolute and its host name decodes: yarl decodes it only when asked, and a
    punycode label that does not round-trip ("xn--") raises there, not when parsing."""
    _ = parsed.host  # raises UnicodeError (a ValueError) for such a host
    return parsed if parsed.is_absolute() else None


def url_host(url: str | URL) -> str | None:
    """A URL's host name, lower case, as aiohttp would connect to it (None: none or unparseable)."""
    parsed = url if isinstance(url, URL) else _parse(url)
    host = parsed.host if parsed is not None else None
    return host.lower() if host else None


def _origin(url: str | URL) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a URL as aiohttp reads it; None for one with user info
    (``http://api@evil/`` must never pass for the API) or that cannot be parsed."""
    parsed = url if isinstance(url, URL) else _parse(url)
    if parsed is None or parsed.user or parsed.password or not parsed.host:
        return None
    return parsed.scheme, parsed.host.lower(), parsed.port


LARGEST_ANSWER = 64 * 1024 * 1024  # bytes: the model list, the largest answer, is a few MB


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    """The answer's JSON; None when it is not JSON or larger than LARGEST_ANSWER (read no further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > LARGEST_ANSWER:
            return None
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:  # UnicodeDecodeError is one
        return None


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    """Retry-After in seconds: a number of seconds, or an HTTP date."""
    value = resp.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def iso_time(moment: float) -> str:
    """Unix time as the API writes times: ISO 8601 UTC with milliseconds."""
    text = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _unix_time(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _listing(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise Transient("the model listing was not a list")
    return [entry for entry in data if isinstance(entry, dict)]


def _usd_price(data: dict[str, Any]) -> Decimal:
    """A quote's price, which must be in USD: a price in another currency is not one (an
    answer without a currency is taken as USD, as WaveSpeed documents its prices)."""
    currency = data.get("currency")
    if currency is not None and str(currency).strip().upper() != "USD":
        raise WaveSpeedError(f"the quote is in {str(currency)[:12]!r}, not USD")
    return _amount(data.get("price"), "price")


def _balance(data: Any) -> Decimal:
    return _amount(_dict(data).get("balance"), "balance")


def _secret(data: Any) -> str:
    secret = _dict(data).get("secret")
    if not isinstance(secret, str) or not secret:
        raise Transient("the webhook secret answer had no secret")
    return secret


def _amount(value: Any, name: str) -> Decimal:
    """A USD amount from an answer, exactly as written (0.1 stays 0.1, not its float);
    WaveSpeedError when it is missing, not a number, or negative."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise WaveSpeedError(f"the answer had no {name}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise WaveSpeedError(f"the answer's {name} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise WaveSpeedError(f"the answer's {name} is not a usable amount")
    return amount


def _unwrap(status: int, body: Any, retry_after: float | None = None) -> dict[str, Any]:
    """The envelope's ``data`` object, or the typed error its HTTP status / ``code`` means."""
    data = _envelope_data(status, body, retry_after)
    if not isinstance(data, dict):
        raise Transient("the answer was not the expected JSON envelope", status=status)
    return data


def _envelope_data(status: int, body: Any, retry_after: float | None = None) -> Any:
    """The envelope's ``data`` (any JSON value), or the typed error its HTTP status / ``code`` means
    (counted for /metrics by its kind)."""
    try:
        return _read_envelope(status, body, retry_after)
    except WaveSpeedError as err:
        metrics.wavespeed_error(error_kind(err))
        raise


def error_kind(err: WaveSpeedError) -> str:
    """The kind of a WaveSpeed refusal (``bot.metrics.ERROR_KINDS``)."""
    for kind, name in ((AuthError, "auth"), (RateLimited, "rate_limited"), (Moderated, "moderated"),
                       (BadRequest, "bad_request")):
        if isinstance(err, kind):
            return name
    return "server"


def _read_envelope(status: int, body: Any, retry_after: float | None) -> Any:
    envelope = body if isinstance(body, dict) else {}
    code = envelope.get("code", status)
    if not isinstance(code, int) or isinstance(code, bool):  # an odd envelope: unreadable, not a refusal
        if status == 200:
            raise Transient("the answer was not the expected JSON envelope", status=status)
        code = status
    message = str(envelope.get("message") or f"HTTP {status}")[:300]
    data = envelope.get("data")
    if status == 200 and code == 200 and data is not None:
        return data
    if status == 200 and code == 200:
        raise Transient("the answer was not the expected JSON envelope", status=status)
    failing = status if status != 200 else code
    if failing in (401, 403):
        raise AuthError("WaveSpeed refused the API key", status=status, code=code)
    if failing == 429:
        raise RateLimited(f"rate limited: {message}", retry_after, status=status, code=code)
    if code in MODERATION_CODES:
        raise Moderated(message, status=status, code=code)
    if code in BAD_INPUT_CODES | TASK_FAILED_CODES or 400 <= failing < 500:
        raise BadRequest(message, status=status, code=code)
    raise Transient(f"WaveSpeed error {failing}: {message}", status=status, code=code)

"""A local server that speaks the WaveSpeed API for the Kling models (and a few others).

It serves a WaveSpeed-shaped model listing (``GET /api/v3/models``: the five seed models
and newer ones, see models.py), quotes prices (``POST /api/v3/model/price``), reports a
balance, validates each submit against its model's served request schema and media
rules like the real API (same envelope, same error codes), moves each
task ``created -> processing -> completed`` over ``job_seconds`` (each task +- up to
``run_spread`` seconds, as real run times vary), and serves a real
MP4 zooming into the submitted image (with ``video_bytes``: a clip of noise about that
large, for videos over a chat's upload limit). Tests and the demo script failures
through ``fail_next`` / ``plan_outcome`` (or ``POST /_sim/control`` from another
process), and read what it received from ``submissions`` and ``requests``.

Faults (``fail_next(..., kind=...)``, or random ones with ``fault_rate``) cover what a
flaky WaveSpeed shows: error envelopes, late answers, dropped connections, bodies
that are not JSON, submits that create the task but never answer (or answer late),
completed results without outputs and video downloads that stall. Every fault served
is logged in ``faults_served``. ``POST /api/v3/predictions`` serves the history.

A submit with ``?webhook=<url>`` gets the task's end POSTed there, signed with
``webhook_secret`` (also at ``GET /api/v3/webhook/secret``), retried up to 3 times;
``fail_next("webhook", kind=...)`` drops, duplicates, mis-signs or backdates one.

The parts live beside it: faults.py (kinds, queues, random draws), answers.py
(envelopes and broken answers), models.py (the listing, prices, schema checks),
inputs.py (media checks), account.py (listing, price, balance and webhook secret
routes), tasks.py (task states and
the prediction object), history.py (the history query), webhooks.py (deliveries)
and control.py (``/_sim/control`` and ``/_sim/state``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import random
import secrets
import time
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.devtools.account import add_account_routes
from bot.devtools.answers import (
    SimulatedError,
    drop_connection,
    envelope,
    fault_answer,
    hang,
    malformed,
    unauthorised,
)
from bot.devtools.clips import noisy_clip, sample_photo, zoom_clip
from bot.devtools.control import add_control_routes
from bot.devtools.faults import ENDPOINTS, FAULT_KINDS, Fault, FaultBook
from bot.devtools.history import HistoryQuery
from bot.devtools.inputs import Uploads, check_inputs, check_webhook_url
from bot.devtools.models import ModelBook
from bot.devtools.tasks import ENDED, OUTCOMES, SimTask, prediction
from bot.devtools.uploads import add_upload_routes
from bot.devtools.webhooks import WebhookSender, signature

__all__ = ["ENDPOINTS", "FAULT_KINDS", "OUTCOMES", "Fault", "ModelBook", "SimTask", "SimulatedError", "Simulator"]


class Simulator:
    """The WaveSpeed API on localhost: scripting (fail_next, plan_outcome), routes and handlers."""

    def __init__(self, *, job_seconds: float = 3.0, api_key: str | None = None,
                 video_seconds: float = 2.0, video_bytes: int | None = None, fault_rate: float = 0.0,
                 seed: int | None = None, run_spread: float = 0.0):
        self.job_seconds = job_seconds
        self.run_spread = run_spread  # each task's run is job_seconds +- up to this many seconds (uniform)
        self._run_rng = random.Random(seed)
        self.api_key = api_key  # None: any non-empty bearer token is accepted
        self.video_seconds = video_seconds
        self.video_bytes = video_bytes  # None: a small zoom clip; else a 720p clip of noise about this large
        self.tasks: dict[str, SimTask] = {}
        self.submissions: list[dict[str, Any]] = []  # {"model", "body"} per accepted submit
        self.requests: list[dict[str, Any]] = []  # every request: method, path, headers
        self.outcomes: collections.deque[str] = collections.deque()
        self.uploads: Uploads = {}
        self.fault_rate = fault_rate  # chance of a random transient fault per API request
        self.slow_seconds = 3.0  # how long random slow answers, hangs and stalls last
        self.fault_book = FaultBook(seed)  # scripted faults, random draws, the log
        self.webhook_secret = "whsec_" + secrets.token_hex(24)  # signs webhooks; GET /api/v3/webhook/secret
        self.webhook_retry_delays: tuple[float, ...] = (0.2, 0.5)  # the waits between a delivery's 3 attempts
        self.webhooks_sent: list[dict[str, Any]] = []  # per attempt: url, webhook_id, timestamp, status, body, time
        self._webhooks = WebhookSender(self.webhooks_sent)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.output_origin: str | None = None  # where results say videos are (a CDN); None: here
        self.models = ModelBook()  # what GET /api/v3/models lists and submits are checked against
        self.price_requests: list[dict[str, Any]] = []  # {"model_id", "inputs"} per quote asked
        self.balance = Decimal("100")  # USD; each accepted submit spends its price
        self.old_balance_path = True  # False: GET /api/v3/balance answers 404 (only /account/balance)

    @property
    def faults(self) -> dict[str, collections.deque[Fault]]:
        """The scripted faults still waiting, per endpoint."""
        return self.fault_book.queues

    @property
    def faults_served(self) -> list[tuple[str, str]]:
        """(endpoint, Fault.label) per fault served, in order."""
        return self.fault_book.served

    def sign(self, webhook_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value (``v3,<hex>``) for these exact bytes."""
        return signature(self.webhook_secret, webhook_id, timestamp, body)

    # --- scripting ------------------------------------------------------------

    def fail_next(self, endpoint: str, status: int = 0, code: int | None = None, *, times: int = 1,
                  message: str = "simulated fault", retry_after: float | None = None,
                  delay: float = 0.0, kind: str = "status") -> None:
        """Break the next ``times`` calls of an endpoint (or events, for "webhook").

        kind "status": answer an error envelope (status 0: none), after ``delay`` seconds
        (to make clients time out); ``retry_after`` sets the Retry-After header.
        Other kinds (see FAULT_KINDS) act after ``delay`` too, except "accept_hang" and
        "stall", which hang for ``delay`` seconds (0: ``slow_seconds``) or until the
        client gives up. A "no_outputs" fault waits for a result call of a completed task.
        Webhook kinds: "drop", "duplicate", "bad_signature", "stale".
        """
        self.fault_book.script(endpoint, Fault(status, code, message, retry_after, delay, kind), times)

    def set_base_price(self, model_id: str, usd: Decimal | float | str) -> None:
        """A listed model's new base_price (the price of its default inputs), and so its quotes."""
        self.models.set_base_price(model_id, usd)

    def remove_model(self, model_id: str) -> None:
        """Take a model off the listing: its submits then answer 404, its quotes 1401."""
        self.models.remove(model_id)

    def restore_model(self, model_id: str) -> None:
        self.models.restore(model_id)

    def plan_outcome(self, outcome: str, times: int = 1) -> None:
        """How the next submitted tasks end: ok, nsfw, failed, stuck or moderated."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        self.outcomes.extend([outcome] * times)

    # --- serving --------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._record])
        add_upload_routes(app, self)
        app.router.add_get("/api/v3/predictions/{id}/result", self._result)
        app.router.add_post("/api/v3/predictions", self._history)
        add_account_routes(app, self)
        # last: a model id may hold slashes ("kwaivgi/kling-v3.0-pro/image-to-video"), and the
        # routes above win over it as they are matched in the order they were added
        app.router.add_post("/api/v3/{model_id:.+}", self._submit)
        app.router.add_get("/outputs/{id}.mp4", self._output)
        add_control_routes(app, self)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in the running loop; returns the base URL."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]  # the port when 0 was asked
        self.base_url = f"http://{host}:{bound}"
        return self.base_url

    async def close(self) -> None:
        await self._webhooks.close()
        if self._runner:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append({"method": request.method, "path": request.path_qs,
                              "headers": dict(request.headers)})
        return await handler(request)

    def authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        return bool(token) and (self.api_key is None or token == self.api_key)

    def take_fault(self, endpoint: str, *, completed: bool = False) -> Fault | None:
        return self.fault_book.take(endpoint, rate=self.fault_rate, slow=self.slow_seconds, completed=completed)

    def _prediction(self, task: SimTask, origin: str) -> dict[str, Any]:
        return prediction(task, origin, self.job_seconds, self.output_origin)

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        if not self.authorised(request):
            return unauthorised()
        model_id = request.match_info["model_id"]
        if not self.models.serves(model_id):
            return envelope(None, 404, 404, f"model {model_id} not found")
        fault = self.take_fault("submit")
        # the full delay: a task it creates appears then, as from a slow server
        if early := await fault_answer(fault, request, ("malformed", "accept_drop"), full_delay=True):
            return early
        answer = await self._create_task(model_id, request)
        if fault is None or fault.kind == "status":
            return answer
        if fault.kind == "malformed":  # the task exists; its answer is what breaks
            return malformed()
        if fault.kind == "accept_drop":
            return await drop_connection(request)
        await hang(request, fault.delay or self.slow_seconds)  # accept_hang
        return answer

    async def _create_task(self, model_id: str, request: web.Request) -> web.Response:
        try:
            webhook = check_webhook_url(request.query.get("webhook"))
            body = await request.json()
            if not isinstance(body, dict):
                raise SimulatedError(400, 1401, "the body must be a JSON object")
            self.models.check_submit(model_id, body)
            image = await check_inputs(self.models.schema(model_id), body, request, self.uploads)
        except SimulatedError as err:
            return err.answer()
        except ValueError:
            return envelope(None, 400, 1401, "the body is not valid JSON")
        outcome = self.outcomes.popleft() if self.outcomes else "ok"
        if outcome == "moderated":
            return envelope(None, 400, 1200, "content flagged by moderation")
        # a model given no photo (text-to-video, video-to-video) still makes a clip of something
        task = SimTask(f"sim-{next(self._ids)}-{secrets.token_hex(4)}", model_id, body, image or sample_photo(),
                       outcome, webhook=webhook, run_offset=self._run_rng.uniform(-self.run_spread, self.run_spread))
        self.tasks[task.id] = task
        self.submissions.append({"model": model_id, "body": body})
        self.balance -= self.models.price(model_id, body)
        origin = str(request.url.origin())
        if webhook is not None and outcome != "stuck":
            self._webhooks.in_background(self._report_end(task, webhook, origin))
        return envelope(self._prediction(task, origin))

    async def _report_end(self, task: SimTask, url: str, origin: str) -> None:
        """Wait for the task to end, then POST its prediction to its webhook, unasked."""
        while task.status(self.job_seconds) not in ENDED:  # noqa: ASYNC110 (job_seconds may change)
            await asyncio.sleep(max(0.01, task.ends_at(self.job_seconds) - time.monotonic()))
        fault = self.take_fault("webhook")  # the next event to end draws the next webhook fault
        await self._render(task)  # so the output URL in the event serves the video
        await self._webhooks.deliver(url, self._prediction(task, origin), fault,
                                     secret=self.webhook_secret, retry_delays=self.webhook_retry_delays)

    async def _result(self, request: web.Request) -> web.StreamResponse:
        if not self.authorised(request):
            return unauthorised()
        task = self.tasks.get(request.match_info["id"])
        fault = self.take_fault("result", completed=task is not None and task.status(self.job_seconds) == "completed")
        if early := await fault_answer(fault, request, late=("no_outputs",)):
            return early
        if task is None:
            return envelope(None, 404, 404, "prediction not found")
        await self._render(task)
        answer = self._prediction(task, str(request.url.origin()))
        if fault is not None and fault.kind == "no_outputs":
            answer.update(outputs=[], has_nsfw_contents=[])
        return envelope(answer)

    async def _render(self, task: SimTask) -> None:
        if task.status(self.job_seconds) == "completed" and task.video is None:
            task.video = await asyncio.to_thread(self._clip, task)

    def _clip(self, task: SimTask) -> bytes:
        if self.video_bytes is None:
            return zoom_clip(task.image, seconds=self.video_seconds)
        # videos made to audio (avatars) carry the voice: their big clip has a sound track
        return noisy_clip(self.video_bytes, seconds=self.video_seconds, audio=bool(task.inputs.get("audio")))

    async def _output(self, request: web.Request) -> web.StreamResponse:
        fault = self.take_fault("output")
        if early := await fault_answer(fault, request):
            return early
        task = self.tasks.get(request.match_info["id"])
        if task is not None:
            await self._render(task)  # a completed task's output URL (e.g. from history) works
        if task is None or task.video is None:
            raise web.HTTPNotFound()
        if fault is None or fault.kind != "stall":
            return web.Response(body=task.video, content_type="video/mp4")
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(task.video)
        with contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write(task.video[:max(1, len(task.video) // 3)])
        await hang(request, fault.delay or self.slow_seconds)
        return await drop_connection(request, response)  # never finishes the body

    async def _history(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/v3/predictions``: the last 7 days' tasks, newest first, no inputs."""
        if not self.authorised(request):
            return unauthorised()
        if fault := await fault_answer(self.take_fault("history"), request):
            return fault
        try:
            query = HistoryQuery.parse(await request.text())
        except SimulatedError as err:
            return err.answer()
        tasks, total = query.select(self.tasks.values(), self.job_seconds)
        origin = str(request.url.origin())
        items = [self._prediction(task, origin) for task in tasks]
        return envelope({"items": items, "page": query.page, "page_size": query.page_size, "total": total})

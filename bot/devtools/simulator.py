"""A local server that speaks the WaveSpeed API for the five Kling models.

It validates inputs like the real API (same envelope, same error codes), moves each
task ``created -> processing -> completed`` over ``job_seconds``, and serves a real
MP4 zooming into the submitted image. Tests and the demo script failures through
``fail_next`` / ``plan_outcome`` (or ``POST /_sim/control`` from another process),
and read what it received from ``submissions`` and ``requests``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import io
import itertools
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler
from PIL import Image, UnidentifiedImageError

from bot import catalog
from bot.devtools.clips import zoom_clip

log = logging.getLogger(__name__)

OUTCOMES = ("ok", "nsfw", "failed", "stuck", "moderated")
ENDPOINTS = ("submit", "result", "upload", "output")


@dataclass
class SimTask:
    id: str
    model: str
    inputs: dict[str, Any]
    image: bytes
    outcome: str
    created: float = field(default_factory=time.monotonic)
    video: bytes | None = None


@dataclass
class Fault:
    status: int  # 0: no error, just answer late (after ``delay``)
    code: int | None = None
    message: str = "simulated fault"
    retry_after: float | None = None
    delay: float = 0.0


class SimulatedError(Exception):
    def __init__(self, status: int, code: int, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Simulator:
    def __init__(self, *, job_seconds: float = 3.0, api_key: str | None = None,
                 video_seconds: float = 2.0):
        self.job_seconds = job_seconds
        self.api_key = api_key  # None: any non-empty bearer token is accepted
        self.video_seconds = video_seconds
        self.tasks: dict[str, SimTask] = {}
        self.submissions: list[dict[str, Any]] = []  # {"model", "body"} per accepted submit
        self.requests: list[dict[str, Any]] = []  # every request: method, path, headers
        self.faults: dict[str, collections.deque[Fault]] = {e: collections.deque() for e in ENDPOINTS}
        self.outcomes: collections.deque[str] = collections.deque()
        self.uploads: dict[str, tuple[bytes, str]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # --- scripting ------------------------------------------------------------

    def fail_next(self, endpoint: str, status: int, code: int | None = None, *, times: int = 1,
                  message: str = "simulated fault", retry_after: float | None = None,
                  delay: float = 0.0) -> None:
        """Answer the next ``times`` calls of an endpoint with an error (status 0: none),
        after ``delay`` seconds (to make clients time out)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        for _ in range(times):
            self.faults[endpoint].append(Fault(status, code, message, retry_after, delay))

    def plan_outcome(self, outcome: str, times: int = 1) -> None:
        """How the next submitted tasks end: ok, nsfw, failed, stuck or moderated."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")
        self.outcomes.extend([outcome] * times)

    # --- serving --------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._record])
        app.router.add_post("/api/v3/media/upload/binary", self._upload)
        app.router.add_get("/api/v3/predictions/{id}/result", self._result)
        app.router.add_post("/api/v3/{owner}/{name}", self._submit)
        app.router.add_get("/outputs/{id}.mp4", self._output)
        app.router.add_get("/media/{token}/{name}", self._media)
        app.router.add_post("/_sim/control", self._control)
        app.router.add_get("/_sim/state", self._state)
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
        if self._runner:
            await self._runner.cleanup()

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append({"method": request.method, "path": request.path_qs,
                              "headers": dict(request.headers)})
        return await handler(request)

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        return bool(token) and (self.api_key is None or token == self.api_key)

    async def _pending_fault(self, endpoint: str) -> web.Response | None:
        if not self.faults[endpoint]:
            return None
        fault = self.faults[endpoint].popleft()
        await asyncio.sleep(fault.delay)
        if not fault.status:
            return None
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
        return _envelope(None, fault.status, fault.code or fault.status, fault.message, headers)

    async def _submit(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _envelope(None, 401, 401, "Unauthorized: invalid API key")
        model_id = f"{request.match_info['owner']}/{request.match_info['name']}"
        model = next((m for m in catalog.MODELS if m.id == model_id), None)
        if model is None:
            return _envelope(None, 404, 404, f"model {model_id} not found")
        if fault := await self._pending_fault("submit"):
            return fault
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise SimulatedError(400, 1401, "the body must be a JSON object")
            image = await self._check_inputs(model, body, request)
        except SimulatedError as err:
            return _envelope(None, err.status, err.code, err.message)
        except ValueError:
            return _envelope(None, 400, 1401, "the body is not valid JSON")
        outcome = self.outcomes.popleft() if self.outcomes else "ok"
        if outcome == "moderated":
            return _envelope(None, 400, 1200, "content flagged by moderation")
        task = SimTask(f"sim-{next(self._ids)}-{secrets.token_hex(4)}", model_id, body, image, outcome)
        self.tasks[task.id] = task
        self.submissions.append({"model": model_id, "body": body})
        return _envelope(self._prediction(task, request))

    async def _check_inputs(self, model: catalog.Model, body: dict[str, Any],
                            request: web.Request) -> bytes:
        for name in sorted(model.required):
            if body.get(name) in (None, ""):
                raise SimulatedError(400, 1400, f"missing required parameter: {name}")
        if model.kind == "effect" and body["effect_scene"] not in catalog.EFFECTS:
            raise SimulatedError(400, 1401, f"effect_scene must be one of the {len(catalog.EFFECTS)} scenes")
        for name in ("prompt", "negative_prompt"):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > catalog.PROMPT_MAX_CHARS):
                raise SimulatedError(400, 1401, f"{name} must be text of at most {catalog.PROMPT_MAX_CHARS} characters")
        if "guidance_scale" in body:
            g = body["guidance_scale"]
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g <= 1:
                raise SimulatedError(400, 1401, "guidance_scale must be a number from 0 to 1")
        if "duration" in body and body["duration"] not in [str(d) for d in model.durations]:
            raise SimulatedError(400, 1401, "duration must be \"5\" or \"10\"")
        image = await self._fetch(body["image"], request)
        self._check_image(image, model.image, "image")
        if body.get("end_image"):
            self._check_image(await self._fetch(body["end_image"], request), catalog.ImageRule(), "end_image")
        if "audio" in model.required and not await self._fetch(body["audio"], request):
            raise SimulatedError(400, 1402, "audio is empty")
        return image

    async def _fetch(self, ref: Any, request: web.Request) -> bytes:
        if not isinstance(ref, str):
            raise SimulatedError(400, 1401, "media inputs must be a URL or a data URI")
        if ref.startswith("data:"):
            try:
                return base64.b64decode(ref.split(",", 1)[1], validate=True)
            except (IndexError, binascii.Error):
                raise SimulatedError(400, 1401, "malformed data URI") from None
        own = f"{request.url.origin()}/media/"
        if ref.startswith(own):
            token = ref[len(own):].split("/", 1)[0]
            if token in self.uploads:
                return self.uploads[token][0]
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                    s.get(ref) as resp:
                if resp.status == 200:
                    return await resp.read()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            pass
        raise SimulatedError(400, 1402, "media URL unreachable")

    @staticmethod
    def _check_image(data: bytes, rule: catalog.ImageRule, name: str) -> None:
        if len(data) > rule.max_bytes:
            raise SimulatedError(400, 1401, f"{name} exceeds 10MB")
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format, img.size
        except (UnidentifiedImageError, OSError):
            raise SimulatedError(400, 1401, f"{name} is not a readable image") from None
        if fmt not in ("JPEG", "PNG"):
            raise SimulatedError(400, 1401, f"{name} must be jpg/jpeg/png")
        if min(w, h) < rule.min_side:
            raise SimulatedError(400, 1401, f"{name} resolution must be at least 300*300px")
        if rule.aspect and not rule.aspect[0] <= w / h <= rule.aspect[1]:
            raise SimulatedError(400, 1401, f"{name} aspect ratio must be between 1:2.5 and 2.5:1")

    async def _result(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _envelope(None, 401, 401, "Unauthorized: invalid API key")
        if fault := await self._pending_fault("result"):
            return fault
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return _envelope(None, 404, 404, "prediction not found")
        if self._status(task) == "completed" and task.video is None:
            task.video = await asyncio.to_thread(zoom_clip, task.image, seconds=self.video_seconds)
        return _envelope(self._prediction(task, request))

    def _status(self, task: SimTask) -> str:
        elapsed = time.monotonic() - task.created
        if task.outcome == "stuck" or elapsed < self.job_seconds:
            return "created" if elapsed < self.job_seconds * 0.15 else "processing"
        return "failed" if task.outcome == "failed" else "completed"

    def _prediction(self, task: SimTask, request: web.Request) -> dict[str, Any]:
        base = str(request.url.origin())
        status = self._status(task)
        done = status == "completed"
        return {
            "id": task.id, "model": task.model, "status": status,
            "outputs": [f"{base}/outputs/{task.id}.mp4"] if done else [],
            "urls": {"get": f"{base}/api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": [task.outcome == "nsfw"] if done else [],
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "error": "simulated failure: the model could not animate this image"
                     if status == "failed" else "",
            "timings": {"inference": int(self.job_seconds * 1000)} if done else {},
        }

    async def _output(self, request: web.Request) -> web.StreamResponse:
        if fault := await self._pending_fault("output"):
            return fault
        task = self.tasks.get(request.match_info["id"])
        if task is None or task.video is None:
            raise web.HTTPNotFound()
        return web.Response(body=task.video, content_type="video/mp4")

    async def _upload(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _envelope(None, 401, 401, "Unauthorized: invalid API key")
        if fault := await self._pending_fault("upload"):
            return fault
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, BodyPartReader) and part.name == "file":
                data = await part.read()
                token = secrets.token_hex(8)
                name = part.filename or "file"
                self.uploads[token] = (data, part.headers.get("Content-Type", "application/octet-stream"))
                return _envelope({"download_url": f"{request.url.origin()}/media/{token}/{name}",
                                  "type": self.uploads[token][1], "size": len(data)})
        return _envelope(None, 400, 1400, "missing multipart field: file")

    async def _media(self, request: web.Request) -> web.Response:
        data, mime = self.uploads.get(request.match_info["token"], (None, ""))
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type=mime)

    async def _control(self, request: web.Request) -> web.Response:
        """Script the simulator from another process: {"fail_next": {...}, "outcome": "..."}."""
        body = await request.json()
        if "fail_next" in body:
            self.fail_next(**body["fail_next"])
        if "outcome" in body:
            self.plan_outcome(body["outcome"], body.get("times", 1))
        if "job_seconds" in body:
            self.job_seconds = float(body["job_seconds"])
        return web.json_response({"ok": True})

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response({"submissions": self.submissions,
                                  "tasks": {t.id: self._status(t) for t in self.tasks.values()}})


def _envelope(data: dict[str, Any] | None, status: int = 200, code: int = 200,
              message: str = "success", headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"code": code, "message": message, "data": data},
                             status=status, headers=headers)

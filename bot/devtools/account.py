"""The simulator's account endpoints: the model listing, price quotes, the balance, the webhook secret.

``GET /api/v3/models`` lists ``sim.models`` (WaveSpeed's shape); ``POST /api/v3/model/price``
quotes ``{model_id, inputs}`` (unknown model, or inputs the schema refuses: 400/1401) and
keeps each body in ``sim.price_requests``; ``GET /api/v3/balance`` answers ``data.balance``
(404 when ``sim.old_balance_path`` is off, as on an account that serves only the newer
path), ``GET /api/v3/account/balance`` answers ``{balance, currency}``. Faults:
``fail_next("models" | "price" | "balance")``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from aiohttp import web

from bot.devtools.answers import SimulatedError, envelope, fault_answer, unauthorised

if TYPE_CHECKING:
    from bot.devtools.simulator import Simulator

CURRENCY = "USD"


def add_account_routes(app: web.Application, sim: Simulator) -> None:
    async def models(request: web.Request) -> web.StreamResponse:
        if not sim.authorised(request):
            return unauthorised()
        if early := await fault_answer(sim.take_fault("models"), request):
            return early
        return web.json_response({"code": 200, "message": "success", "data": sim.models.listing()})

    async def price(request: web.Request) -> web.StreamResponse:
        if not sim.authorised(request):
            return unauthorised()
        if early := await fault_answer(sim.take_fault("price"), request):
            return early
        try:
            body = await request.json()
        except ValueError:
            return envelope(None, 400, 1401, "the body is not valid JSON")
        try:
            usd = _quote(sim, body)
        except SimulatedError as err:
            return err.answer()
        return envelope({"price": float(usd), "discounted_price": float(usd), "discount_rate": 0,
                         "currency": CURRENCY})

    async def balance(request: web.Request) -> web.StreamResponse:
        if not sim.authorised(request):
            return unauthorised()
        if early := await fault_answer(sim.take_fault("balance"), request):
            return early
        if not sim.old_balance_path:
            return envelope(None, 404, 404, "not found")
        return envelope({"balance": float(sim.balance)})

    async def account_balance(request: web.Request) -> web.StreamResponse:
        if not sim.authorised(request):
            return unauthorised()
        if early := await fault_answer(sim.take_fault("balance"), request):
            return early
        return web.json_response({"balance": float(sim.balance), "currency": CURRENCY})

    async def webhook_secret(request: web.Request) -> web.Response:
        """The key webhook deliveries are signed with."""
        if not sim.authorised(request):
            return unauthorised()
        return envelope({"secret": sim.webhook_secret})

    app.router.add_get("/api/v3/models", models)
    app.router.add_post("/api/v3/model/price", price)
    app.router.add_get("/api/v3/balance", balance)
    app.router.add_get("/api/v3/account/balance", account_balance)
    app.router.add_get("/api/v3/webhook/secret", webhook_secret)


def _quote(sim: Simulator, body: object) -> Decimal:
    """The price of a ``{model_id, inputs}`` body (recorded in ``sim.price_requests``)."""
    if not isinstance(body, dict):
        raise SimulatedError(400, 1401, "the body must be a JSON object")
    model_id, inputs = body.get("model_id"), body.get("inputs", {})
    if not isinstance(model_id, str) or not model_id:
        raise SimulatedError(400, 1400, "missing required parameter: model_id")
    if not isinstance(inputs, dict):
        raise SimulatedError(400, 1401, "invalid parameter inputs: must be an object")
    sim.price_requests.append({"model_id": model_id, "inputs": inputs})
    if not sim.models.serves(model_id):
        raise SimulatedError(400, 1401, f"invalid parameter model_id: model {model_id} not found")
    sim.models.check_quoted(model_id, inputs)
    return sim.models.price(model_id, inputs)

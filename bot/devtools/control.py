"""The simulator's remote control, for another process (the demo, whole-process tests).

``POST /_sim/control`` scripts it: {"fail_next": {...}}, {"outcome": "...", "times": n},
{"fault_rate": 0.3, "seed": 1}, {"slow_seconds": 2}, {"job_seconds": 1}, {"run_spread": 0.5},
{"base_price": {"model_id": "...", "usd": "0.6"}}, {"remove_model": "..."}, {"restore_model": "..."},
{"balance": "12.5"}.
``GET /_sim/state`` reports submissions, task states, faults served, webhooks sent and price requests.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from bot.devtools.simulator import Simulator


def add_control_routes(app: web.Application, sim: Simulator) -> None:
    async def control(request: web.Request) -> web.Response:
        body = await request.json()
        if "fail_next" in body:
            try:
                sim.fail_next(**body["fail_next"])
            except (TypeError, ValueError) as err:
                return web.json_response({"ok": False, "error": str(err)}, status=400)
        if "fault_rate" in body:
            sim.fault_rate = float(body["fault_rate"])
        if "seed" in body:
            sim.fault_book.reseed(body["seed"])
        if "slow_seconds" in body:
            sim.slow_seconds = float(body["slow_seconds"])
        if "outcome" in body:
            sim.plan_outcome(body["outcome"], body.get("times", 1))
        if "job_seconds" in body:
            sim.job_seconds = float(body["job_seconds"])
        if "run_spread" in body:
            sim.run_spread = float(body["run_spread"])
        try:
            _script_models(sim, body)
        except (TypeError, ValueError, KeyError, ArithmeticError) as err:
            return web.json_response({"ok": False, "error": str(err)}, status=400)
        return web.json_response({"ok": True})

    async def state(request: web.Request) -> web.Response:
        return web.json_response({"submissions": sim.submissions,
                                  "tasks": {t.id: t.status(sim.job_seconds) for t in sim.tasks.values()},
                                  "faults_served": sim.faults_served,
                                  "webhooks_sent": sim.webhooks_sent,
                                  "price_requests": sim.price_requests})

    app.router.add_post("/_sim/control", control)
    app.router.add_get("/_sim/state", state)


def _script_models(sim: Simulator, body: dict[str, Any]) -> None:
    """The listing's scripting: base prices, removals, the balance."""
    if "base_price" in body:
        sim.set_base_price(body["base_price"]["model_id"], body["base_price"]["usd"])
    if "remove_model" in body:
        sim.remove_model(body["remove_model"])
    if "restore_model" in body:
        sim.restore_model(body["restore_model"])
    if "balance" in body:
        sim.balance = Decimal(str(body["balance"]))

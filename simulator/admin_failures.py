"""``/_sim/failures``: script the failure events real ACS sends (rules in failures.py, applied by the handlers)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .admin import AdminError
from .failures import FailureRules
from .runtime import Runtime


def _rules(request: Request) -> FailureRules:
    runtime: Runtime = request.state.runtime  # Starlette state is untyped
    return runtime.sim.store.failures


async def add_failure(request: Request) -> Response:
    """``{"operation", "phone_number"?, "call_connection_id"?, "times"?, "code"?, "sub_code"?, "message"?,
    "failed_play_source_index"?}`` → 201 with the rule (its id, the event it sends, the resultInformation)."""
    raw = await request.body()
    try:
        data: Any = json.loads(raw) if raw.strip() else {}
        rule = _rules(request).add(data)
    except ValueError as exc:  # json.JSONDecodeError is one
        raise AdminError(400, str(exc)) from None
    return JSONResponse(rule.to_json(), status_code=201)


async def list_failures(request: Request) -> Response:
    """Every rule since the last reset, oldest first, with how many requests each has failed (``matched``)."""
    return JSONResponse([rule.to_json() for rule in _rules(request).rules])


async def clear_failures(request: Request) -> Response:
    """Forget every rule → 204."""
    _rules(request).rules.clear()
    return Response(status_code=204)


async def delete_failure(request: Request) -> Response:
    """Forget one rule → 204; 404 when there is none by that id."""
    if not _rules(request).remove(request.path_params["rule_id"]):
        raise AdminError(404, f"no failure rule {request.path_params['rule_id']}")
    return Response(status_code=204)


FAILURE_ROUTES = [
    Route("/failures", add_failure, methods=["POST"]),
    Route("/failures", list_failures, methods=["GET"]),
    Route("/failures", clear_failures, methods=["DELETE"]),
    Route("/failures/{rule_id}", delete_failure, methods=["DELETE"]),
]

"""App factory: ``uvicorn --factory simulator.app:create_app``; ``run(settings)`` for the CLI."""

from __future__ import annotations

import gc
import logging.config
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from .acs import acs_endpoint
from .admin import ROUTES, AdminError, admin_error
from .admin_eventgrid import ADMIN_ROUTES, PUBLIC_ROUTES
from .admin_failures import FAILURE_ROUTES
from .files_api import FILE_ROUTES
from .logs import log_config
from .rooms_api import RoomsEndpoint
from .runtime import Runtime
from .settings import Settings


@asynccontextmanager
async def lifespan(app: Starlette, *, settings: Settings) -> AsyncIterator[dict[str, Runtime]]:
    """Make the signing keys, HTTP client and Event Grid subscription at start; stop deliveries at shutdown."""
    runtime = Runtime.start(settings)
    # What start-up built lives as long as the process: out of the collector's full passes, which would otherwise
    # walk it all (tens of ms) every time calls' logs grow by a quarter, stalling every call's requests at once.
    gc.collect()
    gc.freeze()
    try:
        yield {"runtime": runtime}
    finally:
        await runtime.close()


def create_app(settings: Settings | None = None) -> Starlette:
    """The simulator app; settings come from the environment when not given (ConfigError if unusable)."""
    settings = settings or Settings.from_env()
    if settings.log_format == "json":
        # ``uvicorn --factory`` set up its loggers (plain text) before calling this; route them through JSON now.
        logging.config.dictConfig(log_config(settings))
    rooms = RoomsEndpoint()
    routes = [
        Mount("/_sim", routes=ROUTES + ADMIN_ROUTES + FAILURE_ROUTES),
        Mount("/calling", app=acs_endpoint),
        # Both: a Mount alone would redirect "/rooms" to "/rooms/".
        Route("/rooms", rooms),
        Mount("/rooms", app=rooms),
        *PUBLIC_ROUTES,
        *FILE_ROUTES,
    ]
    return Starlette(
        routes=routes,
        lifespan=partial(lifespan, settings=settings),
        exception_handlers={AdminError: admin_error},
    )


def run(settings: Settings | None = None) -> None:
    """Serve until interrupted, on ``settings.host:settings.port`` (what ``callq simulator`` calls)."""
    settings = settings or Settings.from_env()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning", access_log=False,
                log_config=log_config(settings))

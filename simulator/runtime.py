"""Everything one running simulator holds, built in the app's lifespan and closed with it."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import httpx

from .delivery import Dispatcher, aiohttp_poster
from .entra import EntraSigner
from .eventgrid import EventGrid
from .faults import Faults
from .records import RequestLog, ResponseCache
from .settings import Settings
from .signing import CallbackSigner
from .world import Sim

CALLBACK_CONNECTIONS = 512


@dataclass
class Runtime:
    """The simulator's state and clients; reached through the lifespan state as ``runtime``."""

    settings: Settings
    signer: CallbackSigner
    faults: Faults
    sim: Sim
    log: RequestLog
    cache: ResponseCache
    client: httpx.AsyncClient
    callbacks: aiohttp.ClientSession  # Call Automation callbacks
    entra: EntraSigner
    eventgrid: EventGrid
    rooms_cache: ResponseCache  # first responses of repeatable Rooms creates

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        """Generate the signing keys, open the shared HTTP client, create the environment's Event Grid subscription
        (so: call it with the event loop running)."""
        signer = CallbackSigner(
            issuer=settings.issuer,
            audience=settings.resource_id,
            jwks_uri=f"{settings.public_url}/calling/keys",
        )
        faults = Faults()
        # Event Grid's deliveries and handshakes. trust_env=False: a proxy from the environment must never carry
        # loopback deliveries. Generous keep-alive: a connection re-opened per POST costs more than the POST.
        limits = httpx.Limits(max_connections=CALLBACK_CONNECTIONS, max_keepalive_connections=CALLBACK_CONNECTIONS)
        client = httpx.AsyncClient(timeout=settings.callback_timeout_s, trust_env=False, limits=limits)
        # Call Automation's callbacks, the simulator's busiest traffic, on aiohttp (see delivery.aiohttp_poster);
        # trust_env off and keep-alive as above.
        callbacks = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.callback_timeout_s), trust_env=False,
            connector=aiohttp.TCPConnector(limit=CALLBACK_CONNECTIONS, limit_per_host=0))
        dispatcher = Dispatcher(aiohttp_poster(callbacks), signer, faults, attempts=settings.callback_attempts,
                                backoff_s=settings.callback_backoff_s)
        entra = EntraSigner(settings.public_url)
        eventgrid = EventGrid(settings, client, entra, faults)
        sim = Sim(dispatcher, faults, eventgrid, public_url=settings.public_url, resource_id=settings.resource_id,
                  recording_file_delay_s=settings.recording_file_delay_s, ffmpeg=settings.ffmpeg)
        eventgrid.start()
        return cls(settings, signer, faults, sim, RequestLog(), ResponseCache(), client, callbacks, entra,
                   eventgrid, ResponseCache())

    async def reset(self) -> None:
        """``POST /_sim/reset``: rooms, calls, logs, repeatability, faults and runtime Event Grid subscriptions all
        start over (the environment's subscription stays)."""
        await self.sim.reset()
        await self.eventgrid.reset()
        self.faults.clear()
        self.log.clear()
        self.cache.clear()
        self.rooms_cache.clear()

    async def close(self) -> None:
        """Stop delivering callbacks and close the client."""
        await self.sim.reset()
        await self.eventgrid.close()
        await self.client.aclose()
        await self.callbacks.close()

"""callq settings: the one place that reads ``CALLQ_*`` environment variables.

Defaults run the embedded stack (``callq up``) on one machine against the bundled ACS simulator.
Every other module receives a :class:`Settings` instance; tests build one directly.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from workers import keys
from workers.errors import ConfigError

REAL_ACS_OPENID_URL = "https://acscallautomation.communication.azure.com/calling/.well-known/acsopenidconfiguration"
DEV_RESOURCE_ID = "00000000-0000-4000-8000-00000000ca11"
ENTRA_OPENID_URL = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
EVENTGRID_APP_ID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"  # Event Grid's own app: the caller of secure webhooks
EVENTGRID_ROLE = "AzureEventGridSecureWebhookSubscriber"
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")  # RFC 3986 unreserved: goes into a URL's query as it is


def _int(env: Mapping[str, str], name: str, default: int, *, low: int = 1, high: int = 2**31) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive number, got {raw!r}") from None
    if not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def parse_sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host2:port2`` (``[::1]:26379`` for IPv6) → the Sentinels; raises ConfigError naming the bad one."""
    out: list[tuple[str, int]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(f"CALLQ_REDIS_SENTINELS has {part!r}; each entry must be host:port (e.g. "
                              "sentinel-1:26379)")
        if (host, int(port)) not in out:
            out.append((host, int(port)))
    return tuple(out)


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse ``name:key,name2:key2`` into {name: key}; raises ConfigError naming the bad pair (not the key)."""
    keys: dict[str, str] = {}
    for n, pair in enumerate(p.strip() for p in raw.split(",")):
        if not pair:
            continue
        name, sep, key = pair.partition(":")
        if not sep or not name.strip() or not key.strip():
            raise ConfigError(f"CALLQ_API_KEYS entry {n + 1} must look like name:key")
        if len(key.strip()) < 16:
            raise ConfigError(f"CALLQ_API_KEYS key for {name.strip()!r} must be at least 16 characters")
        keys[name.strip()] = key.strip()
    return keys


def parse_query_tokens(raw: str) -> tuple[str, ...]:
    """Parse ``CALLQ_EVENTGRID_QUERY_TOKENS`` (``new,old``: both accepted during a rotation); errors name the entry's
    position, never its value."""
    tokens: list[str] = []
    for n, token in enumerate(t.strip() for t in raw.split(",")):
        if not token:
            continue
        if len(token) < 16 or not _URL_SAFE.fullmatch(token):
            raise ConfigError(f"CALLQ_EVENTGRID_QUERY_TOKENS entry {n + 1} must be at least 16 characters of "
                              "A-Z a-z 0-9 . _ ~ - (it is sent in the URL's query as it is)")
        if token not in tokens:
            tokens.append(token)
    return tuple(tokens)


def parse_networks(raw: str) -> tuple[str, ...]:
    """``10.0.0.0/8,::1/128`` → the networks, normalised; raises ConfigError naming the bad one."""
    out = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            out.append(str(ipaddress.ip_network(part, strict=False)))
        except ValueError:
            raise ConfigError(f"CALLQ_WEBHOOK_ALLOWED_NETWORKS has {part!r}, which is not an address or a "
                              "network (e.g. 127.0.0.0/8)") from None
    return tuple(out)


def parse_schedule(raw: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """``5,30,120`` (seconds after each failed attempt) → a retry schedule; empty: the default."""
    if not raw.strip():
        return default
    try:
        waits = tuple(float(p) for p in raw.split(","))
    except ValueError:
        raise ConfigError(f"CALLQ_WEBHOOK_RETRY_SCHEDULE must be seconds separated by commas, got {raw!r}") from None
    if not waits or any(not 0 <= w <= 7 * 86_400 for w in waits) or len(waits) > 50:
        raise ConfigError(f"CALLQ_WEBHOOK_RETRY_SCHEDULE must hold 1-50 waits of 0 s to 7 days, got {raw!r}")
    return waits


def _eventgrid_entra(env: Mapping[str, str]) -> tuple[str, tuple[str, ...], str]:
    """(tenant id, audiences, OpenID URL) for Entra-authenticated Event Grid deliveries, checked together."""
    tenant = env.get("CALLQ_EVENTGRID_TENANT_ID", "").strip().lower()  # Entra's iss and tid spell it lower-case
    audience = tuple(dict.fromkeys(a.strip() for a in env.get("CALLQ_EVENTGRID_AUDIENCE", "").split(",")
                                   if a.strip()))
    openid_url = env.get("CALLQ_EVENTGRID_OPENID_URL", "").strip()
    if tenant and not _GUID.fullmatch(tenant):
        # iss and tid always carry the GUID, even when the tenant is known by a domain name.
        raise ConfigError(f"CALLQ_EVENTGRID_TENANT_ID must be the directory (tenant) id, a GUID, got {tenant!r}")
    if tenant and not audience:
        raise ConfigError("CALLQ_EVENTGRID_AUDIENCE must be set with CALLQ_EVENTGRID_TENANT_ID: the app's client "
                          "id and/or Application ID URI, comma-separated")
    if (audience or openid_url) and not tenant:
        name = "CALLQ_EVENTGRID_AUDIENCE" if audience else "CALLQ_EVENTGRID_OPENID_URL"
        raise ConfigError(f"{name} needs CALLQ_EVENTGRID_TENANT_ID (the Entra tenant that issues Event Grid's tokens)")
    if openid_url and urlsplit(openid_url).scheme not in ("http", "https"):
        raise ConfigError(f"CALLQ_EVENTGRID_OPENID_URL must be an http(s) URL, got {openid_url!r}")
    return tenant, audience, openid_url


def parse_connection_string(raw: str) -> tuple[str, str]:
    """Split an ACS connection string into (endpoint without trailing slash, access key)."""
    parts = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in raw.split(";") if p.strip())}
    endpoint, key = parts.get("endpoint", ""), parts.get("accesskey", "")
    if not endpoint or not key:
        raise ConfigError("CALLQ_ACS_CONNECTION_STRING must contain endpoint=...;accesskey=...")
    return endpoint.rstrip("/"), key


@dataclass(frozen=True)
class Settings:
    """Every knob callq has. Secrets are excluded from repr so they never reach a log line."""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    sim_host: str = "127.0.0.1"
    sim_port: int = 8089
    redis_port: int = 6390
    flower_port: int = 5555
    redis_url: str = "redis://127.0.0.1:6390/0"
    redis_max_connections: int = 200  # per API process; a request waits for a free one rather than failing
    # Per API process, for SSE streams only: each open stream holds one in a blocking read, so they get their own
    # pool and 300 open operator pages cannot take the connections command requests need.
    redis_stream_max_connections: int = 1000
    external_redis: bool = False  # CALLQ_REDIS_URL or Sentinels were given: `callq up` starts no redis-server
    # Redis behind Sentinel (workers/redis_clients.py): every client asks these Sentinels for the primary of
    # `redis_sentinel_master` and asks again on every reconnect. redis_url then only supplies the primary's
    # database, username, password and TLS (rediss://); its host and port are not used.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    redis_sentinel_password: str = field(default="", repr=False)  # the Sentinels' own (requirepass), if any
    redis_sentinel_tls: bool = False  # the Sentinels themselves are reached over TLS
    # Acknowledged means replicated (workers/replication.py): WAIT for this many replicas after every write callq
    # acknowledges and every claim before a send; 0 = Redis' asynchronous replication as is.
    redis_min_replicas: int = 0
    redis_replication_timeout_ms: int = 1000
    data_dir: str = ".callq"
    public_url: str = "http://127.0.0.1:8000"
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)
    acs_endpoint: str = "http://127.0.0.1:8089"
    acs_access_key: str = field(default="", repr=False)
    acs_resource_id: str = DEV_RESOURCE_ID
    acs_openid_url: str = ""
    # The Azure AI services resource connected to the ACS resource (https://<name>.cognitiveservices.azure.com/),
    # named at connect: ACS needs it for text and SSML plays, speech recognition and transcription. Empty: not sent.
    acs_cognitive_services_endpoint: str = ""
    callback_token: str = field(default="", repr=False)
    flower_user: str = "admin"
    flower_password: str = field(default="", repr=False)
    queue: str = "callq"
    worker_concurrency: int = 8
    idempotency_ttl_s: int = 86_400
    command_ttl_s: int = 7 * 86_400
    event_dedup_ttl_s: int = 86_400
    event_retention_s: int = 7 * 86_400
    outcome_timeout_s: float = 60.0
    wait_max_s: int = 60
    acs_timeout_s: float = 10.0
    acs_rate_per_s: float = 10.0
    acs_rate_burst: int = 5
    rate_wait_max_s: float = 0.5
    visibility_timeout_s: int = 300
    max_attempts: int = 5
    retry_base_s: float = 0.5
    retry_cap_s: float = 30.0
    log_format: str = "text"
    log_level: str = "INFO"
    metrics_token: str = field(default="", repr=False)  # bearer token for /metrics; empty: any API key
    # The door (checked as a command is accepted; 0: no limit): commands of one call, and of one client, accepted
    # and not yet ended; a client's accepts per second (and at once; 0: as many as per second).
    max_pending_per_call: int = 100
    client_max_pending: int = 10_000
    client_accept_rate_per_s: int = 0
    client_accept_burst: int = 0
    # Fair intake (api/intake.py): while other clients are active in one API process, the write requests of each
    # handled at once; the rest wait their turn before any work is done for them. A client alone is not held back.
    # 2, not 4: in the flood bench, during a flooder's fill burst (hundreds of accepts a second), 34 of 784 quiet
    # connects took over 18 ms beside 4 of its writes, 1 of 336 beside 2; 2 still accept far more than ACS's budget.
    client_max_in_flight: int = 2
    # Fair dispatch: the most runnable commands the broker's command queue holds at once; the rest wait their
    # client's turn (lib.lua's dispatch). Small keeps a newcomer close to the front; at least the workers' slots
    # keeps them busy.
    dispatch_window: int = 16
    # Scheduled recordings: how long an occurrence keeps trying to connect to a room call that has not
    # started yet before it is marked missed.
    schedule_grace_s: int = 300
    # A call callq has heard nothing of for this long is checked against ACS, and closed (its pending commands
    # failed call_ended) when ACS no longer has it: a CallDisconnected lost on the way leaves nothing "connected".
    stale_call_s: int = 900
    # Celery beat fail-over (redbeat's lock; see tasks/app.py for why 25 s).
    beat_lock_timeout_s: int = 25
    # Event Grid deliveries (api/eventgrid_auth.py): each option that is configured is enough on its own; with
    # none, every delivery is refused. Entra ID: a bearer token for the tenant and one of the audiences (the app's
    # client id and/or Application ID URI), from the app id with the role (either empty: not checked). Query token:
    # `?token=<one of eventgrid_query_tokens>` on the subscription's URL (several: old and new during a rotation).
    eventgrid_tenant_id: str = ""
    eventgrid_audience: tuple[str, ...] = ()
    eventgrid_openid_url: str = ""  # empty: Entra's own for the tenant (see eventgrid_discovery_url)
    eventgrid_app_id: str = EVENTGRID_APP_ID
    eventgrid_role: str = EVENTGRID_ROLE
    eventgrid_query_tokens: tuple[str, ...] = field(default=(), repr=False)
    # Outbound webhooks (workers/webhooks.py, workers/delivery.py). Networks a webhook URL may reach although they
    # are not public (CIDRs; `callq up` allows loopback for its demo receiver); everything else private, loopback,
    # link-local or a metadata address is refused. The retry schedule: the waits after each failed attempt (s).
    webhook_allowed_networks: tuple[str, ...] = ()
    webhook_timeout_s: float = 15.0
    webhook_retry_schedule: tuple[float, ...] = (5, 30, 120, 300, 1800, 3600, 7200, 14_400, 21_600, 36_000)
    webhook_concurrency: int = 64  # deliveries in flight per worker process
    webhook_retention_s: int = 3 * 86_400  # how long messages are kept for history and replay
    webhook_rotation_grace_s: int = 86_400  # a rotated-out secret keeps signing alongside the new one this long
    webhook_max_endpoints: int = 20  # per client

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``CALLQ_*`` variables; a bad value raises ConfigError naming the variable."""
        env = os.environ if env is None else env
        api_port = _int(env, "CALLQ_API_PORT", cls.api_port, high=65535)
        sim_port = _int(env, "CALLQ_SIM_PORT", cls.sim_port, high=65535)
        redis_port = _int(env, "CALLQ_REDIS_PORT", cls.redis_port, high=65535)
        redis_url = env.get("CALLQ_REDIS_URL", "")
        if redis_url and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
            scheme = urlsplit(redis_url).scheme
            raise ConfigError(f"CALLQ_REDIS_URL must be a redis:// or rediss:// URL, got scheme {scheme!r}")
        sentinels = parse_sentinels(env.get("CALLQ_REDIS_SENTINELS", ""))
        sentinel_master = env.get("CALLQ_REDIS_SENTINEL_MASTER", "").strip()
        if sentinels and not sentinel_master:
            raise ConfigError("CALLQ_REDIS_SENTINEL_MASTER must name the monitored primary (the name in the "
                              "Sentinels' `sentinel monitor <name> ...`) when CALLQ_REDIS_SENTINELS is set")
        if sentinel_master and not sentinels:
            raise ConfigError("CALLQ_REDIS_SENTINEL_MASTER is set but CALLQ_REDIS_SENTINELS is empty: list the "
                              "Sentinels as host:port,host:port")
        if sentinels and urlsplit(redis_url).scheme == "unix":
            raise ConfigError("CALLQ_REDIS_URL must be redis:// or rediss:// with CALLQ_REDIS_SENTINELS (it gives "
                              "the primary's database and credentials), got a unix:// socket")
        sentinel_tls = env.get("CALLQ_REDIS_SENTINEL_TLS", "").strip().lower()
        if sentinel_tls not in ("", "0", "1", "true", "false"):
            raise ConfigError(f"CALLQ_REDIS_SENTINEL_TLS must be true or false, got {sentinel_tls!r}")
        endpoint = env.get("CALLQ_ACS_ENDPOINT", "") or f"http://127.0.0.1:{sim_port}"
        access_key = env.get("CALLQ_ACS_ACCESS_KEY", "")
        if env.get("CALLQ_ACS_CONNECTION_STRING"):
            endpoint, access_key = parse_connection_string(env["CALLQ_ACS_CONNECTION_STRING"])
        endpoint = endpoint.rstrip("/")
        log_format = env.get("CALLQ_LOG_FORMAT", cls.log_format)
        if log_format not in ("text", "json"):
            raise ConfigError(f"CALLQ_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
        eventgrid_tenant_id, eventgrid_audience, eventgrid_openid_url = _eventgrid_entra(env)
        cognitive = env.get("CALLQ_ACS_COGNITIVE_SERVICES_ENDPOINT", "").strip()
        if cognitive and (urlsplit(cognitive).scheme != "https" or not urlsplit(cognitive).hostname):
            raise ConfigError(f"CALLQ_ACS_COGNITIVE_SERVICES_ENDPOINT must be an https URL (the Azure AI services "
                              f"resource's endpoint), got {cognitive!r}")
        log_level = env.get("CALLQ_LOG_LEVEL", cls.log_level).upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"CALLQ_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
        return cls(
            api_host=env.get("CALLQ_API_HOST", cls.api_host),
            api_port=api_port,
            sim_host=env.get("CALLQ_SIM_HOST", cls.sim_host),
            sim_port=sim_port,
            redis_port=redis_port,
            flower_port=_int(env, "CALLQ_FLOWER_PORT", cls.flower_port, high=65535),
            redis_url=redis_url or f"redis://127.0.0.1:{redis_port}/0",
            redis_max_connections=_int(env, "CALLQ_REDIS_MAX_CONNECTIONS", cls.redis_max_connections, low=2,
                                       high=100_000),
            redis_stream_max_connections=_int(env, "CALLQ_REDIS_STREAM_MAX_CONNECTIONS",
                                              cls.redis_stream_max_connections, high=100_000),
            external_redis=bool(redis_url or sentinels),
            redis_sentinels=sentinels,
            redis_sentinel_master=sentinel_master,
            redis_sentinel_password=env.get("CALLQ_REDIS_SENTINEL_PASSWORD", ""),
            redis_sentinel_tls=sentinel_tls in ("1", "true"),
            redis_min_replicas=_int(env, "CALLQ_REDIS_MIN_REPLICAS", cls.redis_min_replicas, low=0, high=16),
            redis_replication_timeout_ms=_int(env, "CALLQ_REDIS_REPLICATION_TIMEOUT_MS",
                                              cls.redis_replication_timeout_ms, low=10, high=60_000),
            data_dir=env.get("CALLQ_DATA_DIR", cls.data_dir),
            public_url=(env.get("CALLQ_PUBLIC_URL", "") or f"http://127.0.0.1:{api_port}").rstrip("/"),
            api_keys=parse_api_keys(env.get("CALLQ_API_KEYS", "")),
            acs_endpoint=endpoint,
            acs_access_key=access_key,
            acs_resource_id=env.get("CALLQ_ACS_RESOURCE_ID", cls.acs_resource_id),
            acs_openid_url=env.get("CALLQ_ACS_OPENID_URL", ""),
            acs_cognitive_services_endpoint=cognitive,
            callback_token=env.get("CALLQ_CALLBACK_TOKEN", ""),
            flower_user=env.get("CALLQ_FLOWER_USER", cls.flower_user),
            flower_password=env.get("CALLQ_FLOWER_PASSWORD", ""),
            queue=env.get("CALLQ_QUEUE", cls.queue),
            worker_concurrency=_int(env, "CALLQ_WORKER_CONCURRENCY", cls.worker_concurrency, high=1000),
            idempotency_ttl_s=_int(env, "CALLQ_IDEMPOTENCY_TTL_SECONDS", cls.idempotency_ttl_s),
            command_ttl_s=_int(env, "CALLQ_COMMAND_TTL_SECONDS", cls.command_ttl_s),
            event_dedup_ttl_s=_int(env, "CALLQ_EVENT_DEDUP_TTL_SECONDS", cls.event_dedup_ttl_s),
            event_retention_s=_int(env, "CALLQ_EVENT_RETENTION_SECONDS", cls.event_retention_s),
            outcome_timeout_s=_float(env, "CALLQ_OUTCOME_TIMEOUT_SECONDS", cls.outcome_timeout_s),
            acs_timeout_s=_float(env, "CALLQ_ACS_TIMEOUT_SECONDS", cls.acs_timeout_s),
            acs_rate_per_s=_float(env, "CALLQ_ACS_RATE_PER_SECOND", cls.acs_rate_per_s),
            acs_rate_burst=_int(env, "CALLQ_ACS_RATE_BURST", cls.acs_rate_burst, high=10_000),
            rate_wait_max_s=_float(env, "CALLQ_RATE_WAIT_MAX_SECONDS", cls.rate_wait_max_s),
            visibility_timeout_s=_int(env, "CALLQ_VISIBILITY_TIMEOUT_SECONDS", cls.visibility_timeout_s,
                                      low=2),
            max_attempts=_int(env, "CALLQ_MAX_ATTEMPTS", cls.max_attempts, high=100),
            retry_base_s=_float(env, "CALLQ_RETRY_BASE_SECONDS", cls.retry_base_s),
            retry_cap_s=_float(env, "CALLQ_RETRY_CAP_SECONDS", cls.retry_cap_s),
            max_pending_per_call=_int(env, "CALLQ_MAX_PENDING_PER_CALL", cls.max_pending_per_call, low=0),
            client_max_pending=_int(env, "CALLQ_CLIENT_MAX_PENDING", cls.client_max_pending, low=0),
            client_accept_rate_per_s=_int(env, "CALLQ_CLIENT_ACCEPT_RATE_PER_SECOND", cls.client_accept_rate_per_s,
                                          low=0, high=1_000_000),
            client_accept_burst=_int(env, "CALLQ_CLIENT_ACCEPT_BURST", cls.client_accept_burst, low=0,
                                     high=1_000_000),
            client_max_in_flight=_int(env, "CALLQ_CLIENT_MAX_IN_FLIGHT", cls.client_max_in_flight, low=0,
                                      high=100_000),
            dispatch_window=_int(env, "CALLQ_DISPATCH_WINDOW", cls.dispatch_window, high=100_000),
            stale_call_s=_int(env, "CALLQ_STALE_CALL_SECONDS", cls.stale_call_s),
            schedule_grace_s=_int(env, "CALLQ_SCHEDULE_GRACE_SECONDS", cls.schedule_grace_s, high=86_400),
            beat_lock_timeout_s=_int(env, "CALLQ_BEAT_LOCK_TIMEOUT_SECONDS", cls.beat_lock_timeout_s, low=2,
                                     high=3600),
            log_format=log_format,
            log_level=log_level,
            metrics_token=env.get("CALLQ_METRICS_TOKEN", ""),
            eventgrid_tenant_id=eventgrid_tenant_id,
            eventgrid_audience=eventgrid_audience,
            eventgrid_openid_url=eventgrid_openid_url,
            # Set but empty means "do not check" (a caller other than Event Grid's app, or no app role), so unset
            # and empty differ here, unlike most variables.
            eventgrid_app_id=env.get("CALLQ_EVENTGRID_APP_ID", cls.eventgrid_app_id).strip().lower(),
            eventgrid_role=env.get("CALLQ_EVENTGRID_ROLE", cls.eventgrid_role).strip(),
            eventgrid_query_tokens=parse_query_tokens(env.get("CALLQ_EVENTGRID_QUERY_TOKENS", "")),
            webhook_allowed_networks=parse_networks(env.get("CALLQ_WEBHOOK_ALLOWED_NETWORKS", "")),
            webhook_timeout_s=_float(env, "CALLQ_WEBHOOK_TIMEOUT_SECONDS", cls.webhook_timeout_s),
            webhook_retry_schedule=parse_schedule(env.get("CALLQ_WEBHOOK_RETRY_SCHEDULE", ""),
                                                  cls.webhook_retry_schedule),
            webhook_concurrency=_int(env, "CALLQ_WEBHOOK_CONCURRENCY", cls.webhook_concurrency, high=10_000),
            webhook_retention_s=_int(env, "CALLQ_WEBHOOK_RETENTION_SECONDS", cls.webhook_retention_s, low=60),
            webhook_rotation_grace_s=_int(env, "CALLQ_WEBHOOK_ROTATION_GRACE_SECONDS", cls.webhook_rotation_grace_s,
                                          low=0),
            webhook_max_endpoints=_int(env, "CALLQ_WEBHOOK_MAX_ENDPOINTS", cls.webhook_max_endpoints, high=10_000),
        )

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests, `callq up` filling generated credentials)."""
        return replace(self, **changes)  # type: ignore[arg-type]  # names checked above; values typed per field

    @property
    def steps_queue(self) -> str:
        """The queue of everything that is not a command's send: reconciles, schedule steps. Workers consume it
        beside the command queue, in turn (kombu rotates the queues it polls), so a burst of steps never starves
        commands, nor the reverse."""
        return keys.steps_queue(self.queue)

    @property
    def worker_queues(self) -> str:
        """What a worker's ``-Q`` names: both queues."""
        return f"{self.queue},{self.steps_queue}"

    @property
    def callback_url(self) -> str:
        """The URL ACS posts CloudEvents to (with the optional shared-secret query token)."""
        url = f"{self.public_url}/v1/acs/events"
        return f"{url}?token={self.callback_token}" if self.callback_token else url

    @property
    def openid_url(self) -> str:
        """Where callback-JWT signing keys are discovered: real ACS's, or the simulator's own."""
        if self.acs_openid_url:
            return self.acs_openid_url
        host = urlsplit(self.acs_endpoint).hostname or ""
        if host.endswith(".communication.azure.com"):
            return REAL_ACS_OPENID_URL
        return f"{self.acs_endpoint}/calling/.well-known/acsopenidconfiguration"

    @property
    def eventgrid_entra(self) -> bool:
        """Whether Event Grid deliveries may authenticate with an Entra ID bearer token."""
        return bool(self.eventgrid_tenant_id and self.eventgrid_audience)

    @property
    def eventgrid_configured(self) -> bool:
        """Whether callq receives Event Grid's room-call events (so it can wait for CallStarted, not poll ACS)."""
        return self.eventgrid_entra or bool(self.eventgrid_query_tokens)

    @property
    def eventgrid_discovery_url(self) -> str:
        """Where the signing keys of Event Grid's Entra tokens are discovered: the setting, else Entra's for the
        tenant (the simulator serves its own at ``{sim}/entra/{tenant}/v2.0/.well-known/openid-configuration``)."""
        return self.eventgrid_openid_url or ENTRA_OPENID_URL.format(tenant=self.eventgrid_tenant_id)

    @property
    def uses_real_acs(self) -> bool:
        return urlsplit(self.acs_endpoint).scheme == "https"


@functools.cache
def process_settings() -> Settings:
    """This process's settings, read from the environment on first use; every later call returns the same object.

    For code with no caller to hand settings in (Celery's module-level app, its signal handlers, Flower's config):
    a process reads its environment once, so all of them see one configuration.
    """
    return Settings.from_env()

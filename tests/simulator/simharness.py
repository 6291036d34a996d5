"""Test harness: the simulator and a callback receiver, each served over real HTTP from a background thread."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import uvicorn
from azure.communication.callautomation import CallAutomationClient, CallConnectionClient
from azure.communication.rooms import RoomsClient
from azure.core.credentials import AzureKeyCredential

from simulator.settings import Settings
from tests.conftest import wait_until

KEY = base64.b64encode(b"callq-simulator-test-key").decode()
CALLER_ID = "+18005550199"


class ServerThread:
    """A uvicorn server for an ASGI app, run in a daemon thread (ws off: nothing here uses websockets)."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", ws="none", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout_s=10.0, what="uvicorn to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10.0)


@dataclass
class Post:
    """One callback POST the receiver got."""

    path: str
    headers: dict[str, str]
    events: list[dict[str, Any]]
    received_at: float


class Receiver:
    """A callback target recording every POST; each test listens on its own path."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._posts: list[Post] = []
        self.fail_next: dict[str, int] = {}  # path -> number of POSTs to answer with 500
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                path = self.path
                try:
                    events = json.loads(body)
                except ValueError:  # a POST cut short (the simulator was reset mid-send)
                    events = None
                with receiver._cond:
                    failing = receiver.fail_next.get(path, 0)
                    if failing:
                        receiver.fail_next[path] = failing - 1
                    elif events is not None:
                        headers = {k.lower(): v for k, v in self.headers.items()}
                        receiver._posts.append(Post(path, headers, events, time.monotonic()))
                        receiver._cond.notify_all()
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Keep the test output quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self, path: str) -> list[Post]:
        with self._cond:
            return [p for p in self._posts if p.path == path]

    def events(self, path: str) -> list[dict[str, Any]]:
        return [e for p in self.posts(path) for e in p.events]

    def wait_events(self, path: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 5.0
                    ) -> list[dict[str, Any]]:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate([e for p in self._posts if p.path == path for e in p.events]),
                                     timeout_s)
        assert ok, f"events at {path} never matched; got {[e['type'] for e in self.events(path)]}"
        return self.events(path)

    def wait_for(self, path: str, event_name: str, count: int = 1, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``count`` events of ``Microsoft.Communication.<event_name>`` arrived; return them."""
        full = f"Microsoft.Communication.{event_name}"
        events = self.wait_events(path, lambda evs: sum(e["type"] == full for e in evs) >= count, timeout_s)
        return [e for e in events if e["type"] == full]


def sign_headers(key_b64: str, method: str, url: str, body: bytes, *, date: str | None = None) -> dict[str, str]:
    """ACS HMAC headers, computed independently of the simulator's verifier."""
    parsed = httpx.URL(url)
    target = parsed.raw_path.decode()
    content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    date = date or formatdate(usegmt=True)
    host = parsed.netloc.decode()
    to_sign = f"{method}\n{target}\n{date};{host};{content_hash}"
    signature = base64.b64encode(hmac.new(base64.b64decode(key_b64), to_sign.encode(), hashlib.sha256).digest())
    return {
        "x-ms-date": date,
        "x-ms-content-sha256": content_hash,
        "Authorization": f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature.decode()}",
    }


class Sim:
    """Handle on the running simulator: admin calls, raw signed ACS calls, SDK clients, call set-up."""

    def __init__(self, base: str, settings: Settings, receiver: Receiver) -> None:
        self.base = base
        self.settings = settings
        self.receiver = receiver
        self.admin = httpx.Client(base_url=base, timeout=10.0)
        self.path = f"/cb/{uuid.uuid4().hex}"  # this test's callback path

    @property
    def callback_url(self) -> str:
        return self.receiver.base + self.path

    def client(self, **kwargs: Any) -> CallAutomationClient:
        kwargs.setdefault("retry_total", 0)
        return CallAutomationClient(self.base, AzureKeyCredential(KEY), **kwargs)

    def rooms_client(self, **kwargs: Any) -> RoomsClient:
        """The unmodified Rooms SDK over http, built as callq builds it (api_version as a plain str)."""
        kwargs.setdefault("retry_total", 0)
        kwargs.setdefault("api_version", "2025-03-13")
        return RoomsClient(self.base, AzureKeyCredential(KEY), **kwargs)

    def subscribe(self, name: str, endpoint_url: str, *, wait: bool = True, **config: Any) -> dict[str, Any]:
        """PUT an Event Grid subscription (retry_scale 0.001 unless given); wait until it is validated."""
        config.setdefault("retry_scale", 0.001)
        response = self.admin.put(f"/_sim/eventgrid/subscriptions/{name}", json={"endpoint_url": endpoint_url,
                                                                                  **config})
        assert response.status_code in (200, 201), response.text
        if wait:
            wait_until(lambda: self.subscription(name)["status"] == "Succeeded", timeout_s=5.0,
                       what=f"subscription {name} to be validated")
        return self.subscription(name)

    def subscription(self, name: str) -> dict[str, Any]:
        response = self.admin.get(f"/_sim/eventgrid/subscriptions/{name}")
        assert response.status_code == 200, response.text
        return response.json()

    def eg_log(self, **filters: str) -> list[dict[str, Any]]:
        return self.admin.get("/_sim/eventgrid/deliveries", params=filters).json()

    def acs(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """A raw ACS request, HMAC-signed like the SDK signs it."""
        url = f"{self.base}{path}"
        raw = b"" if body is None else json.dumps(body).encode()
        all_headers = sign_headers(KEY, method, url, raw)
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        return self.admin.request(method, url, content=raw, headers=all_headers)

    def faults(self, **knobs: Any) -> dict[str, Any]:
        response = self.admin.put("/_sim/faults", json=knobs)
        assert response.status_code == 200, response.text
        return response.json()

    def phone(self, number: str, **script: Any) -> None:
        response = self.admin.put(f"/_sim/phones/{number}", json=script)
        assert response.status_code == 200, response.text

    def log(self, **filters: str) -> list[dict[str, Any]]:
        return self.admin.get("/_sim/log", params=filters).json()

    def deliveries(self, **filters: str) -> list[dict[str, Any]]:
        return self.admin.get("/_sim/callbacks", params=filters).json()

    def room(self, *, pstn: bool = True, participants: tuple[str, ...] = ("8:acs:res_alice", "8:acs:res_bob"),
             start: bool = True, **extra: Any) -> tuple[str, str | None]:
        """A room (and its started call): returns (room_id, server_call_id)."""
        room_id = self.admin.post("/_sim/rooms", json={"pstn_dial_out_enabled": pstn, **extra}).json()["room_id"]
        if not start:
            return room_id, None
        started = self.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": list(participants)})
        return room_id, started.json()["server_call_id"]

    def connect(self, client: CallAutomationClient, room_id: str, *, path: str | None = None,
                context: str | None = None) -> CallConnectionClient:
        """Connect to the room call and wait for CallConnected at ``path`` (default: this test's path)."""
        path = path or self.path
        props = client.connect_call(callback_url=self.receiver.base + path, room_id=room_id, operation_context=context)
        cc = props.call_connection_id
        self.receiver.wait_events(path, lambda evs: any(
            e["type"].endswith("CallConnected") and e["data"]["callConnectionId"] == cc for e in evs))
        return client.get_call_connection(cc)

    def add_phone(self, conn: CallConnectionClient, number: str = "+16045550100") -> None:
        """Dial out to ``number`` (default script: answers) and wait until it joined."""
        from azure.communication.callautomation import PhoneNumberIdentifier

        conn.add_participant(PhoneNumberIdentifier(number), source_caller_id_number=PhoneNumberIdentifier(CALLER_ID))
        self.receiver.wait_events(self.path, lambda evs: any(
            e["type"].endswith("AddParticipantSucceeded") and e["data"]["participant"]["rawId"] == f"4:{number}"
            for e in evs))

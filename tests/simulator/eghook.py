"""A webhook endpoint for the Event Grid tests: answers handshakes as told, records every request."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class HookRequest:
    """One request the hook got (the path keeps its query)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events of a notification, whatever its shape (array, or one CloudEvent object)."""
        return self.body if isinstance(self.body, list) else [self.body] if isinstance(self.body, dict) else []


@dataclass
class Behaviour:
    """How one path answers: ``validation`` is sync | ignore | refuse; ``statuses`` answer the next notifications."""

    validation: str = "sync"
    allow_origin: str | None = "echo"  # CloudEvents OPTIONS: echo the origin, a fixed value, or None (no header)
    statuses: list[int] | None = None


class Hook:
    """Each test uses its own path (``new_path``); ``url(path)`` adds a secret query parameter."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.requests: list[HookRequest] = []
        self.behaviour: dict[str, Behaviour] = {}
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_OPTIONS(self) -> None:
                hook._note(self, None)
                b = hook.behaviour.get(self.path.partition("?")[0], Behaviour())
                self.send_response(200)
                origin = self.headers.get("WebHook-Request-Origin", "")
                if b.allow_origin is not None:
                    self.send_header("WebHook-Allowed-Origin", origin if b.allow_origin == "echo" else b.allow_origin)
                self.send_header("Allow", "POST")
                self.send_header("content-length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                hook._note(self, body)
                b = hook.behaviour.get(self.path.partition("?")[0], Behaviour())
                status, answer = 200, b""
                if self.headers.get("aeg-event-type") == "SubscriptionValidation":
                    if b.validation == "refuse":
                        status = 400
                    elif b.validation == "sync":
                        answer = json.dumps({"validationResponse": body[0]["data"]["validationCode"]}).encode()
                elif b.statuses:
                    status = b.statuses.pop(0)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                """Keep the test output quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _note(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._cond:
            self.requests.append(HookRequest(handler.command, handler.path, headers, body))
            self._cond.notify_all()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def new_path(self, **behaviour: Any) -> str:
        path = f"/eg/{uuid.uuid4().hex}"
        self.behaviour[path] = Behaviour(**behaviour)
        return path

    def url(self, path: str) -> str:
        return f"{self.base}{path}?code=s3cret-{path[-6:]}"

    def at(self, path: str) -> list[HookRequest]:
        with self._cond:
            return [r for r in self.requests if r.path.partition("?")[0] == path]

    def notifications(self, path: str) -> list[HookRequest]:
        return [r for r in self.at(path) if r.method == "POST" and r.headers.get("aeg-event-type") == "Notification"]

    def events(self, path: str) -> list[dict[str, Any]]:
        """The events of every notification that arrived (answered 2xx or not)."""
        return [e for r in self.notifications(path) for e in r.events]

    def wait(self, path: str, predicate: Callable[[list[HookRequest]], bool], timeout_s: float = 5.0
             ) -> list[HookRequest]:
        with self._cond:
            ok = self._cond.wait_for(lambda: predicate([r for r in self.requests if r.path.partition("?")[0] == path]),
                                     timeout_s)
        seen = [(r.method, r.headers.get("aeg-event-type")) for r in self.at(path)]
        assert ok, f"requests at {path} never matched; got {seen}"
        return self.at(path)

    def wait_events(self, path: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 5.0
                    ) -> list[dict[str, Any]]:
        def events_match(requests: list[HookRequest]) -> bool:
            notes = [r for r in requests if r.method == "POST" and r.headers.get("aeg-event-type") == "Notification"]
            return predicate([e for r in notes for e in r.events])

        self.wait(path, events_match, timeout_s)
        return self.events(path)

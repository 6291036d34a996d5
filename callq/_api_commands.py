"""The ``callq`` subcommands that talk to a running API through ``callq.client``: connect, wait, tail, rooms.

The API's URL defaults to this machine's port from the settings and its key to the one ``callq demo`` uses
(``CALLQ_API_KEYS``, else what ``callq up`` generated); ``--api-url`` and ``--api-key`` override both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from callq import stack
from callq._client_base import JSON
from callq.client import Client
from workers.settings import Settings

ROLES = ("presenter", "attendee", "consumer", "collaborator")
Run = Callable[[Settings, argparse.Namespace], int]


def _client(settings: Settings, args: argparse.Namespace) -> Client:
    url = args.api_url or f"http://127.0.0.1:{settings.api_port}"
    key = args.api_key or stack.load_dev_api_key(settings)
    if key is None:
        raise stack.StackError("no API key: pass --api-key, set CALLQ_API_KEYS, or start the stack with `callq up`")
    return Client(url, key)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _outcome(command: JSON, timeout_s: float) -> int:
    """Print a waited-for command; the exit code says whether it succeeded."""
    _print_json(command)
    if command.get("status") not in ("succeeded", "failed"):
        print(f"callq: command {command.get('id')} still {command.get('status')} after {timeout_s:g} s",
              file=sys.stderr)
    return 0 if command.get("status") == "succeeded" else 1


def _connect(settings: Settings, args: argparse.Namespace) -> int:
    with _client(settings, args) as callq:
        command = callq.connect(args.room)
        if not args.wait:
            print(command["id"])
            return 0
        return _outcome(callq.wait(command["id"], timeout_s=args.timeout), args.timeout)


def _wait(settings: Settings, args: argparse.Namespace) -> int:
    with _client(settings, args) as callq:
        return _outcome(callq.wait(args.command_id, timeout_s=args.timeout), args.timeout)


def event_line(event: JSON) -> str:
    """One event as a line: seq, time, short type, and what ACS said of its outcome (if anything)."""
    data = event.get("data") or {}
    result = data.get("resultInformation") or {}
    note = " ".join(str(x) for x in (data.get("operationContext"), result.get("message")) if x)
    kind = str(event.get("type", "")).rsplit(".", 1)[-1]
    return f"{event.get('seq', '-')}  {event.get('time', '-')}  {kind:<32} {note}".rstrip()


def _tail(settings: Settings, args: argparse.Namespace) -> int:
    with _client(settings, args) as callq:
        try:
            for event in callq.stream_events(args.call_connection_id):
                print(event_line(event), flush=True)  # flushed: a pipe reader sees each event as it comes
        except KeyboardInterrupt:
            return 130  # Ctrl-C is how a live tail is stopped: no traceback, the shell's usual code
    return 0


def participant(text: str) -> dict[str, str]:
    """``RAW[:ROLE]``: an ACS raw id (which itself contains colons), then optionally a role after the last one."""
    raw, _, role = text.rpartition(":")
    if role in ROLES and raw:
        return {"communication_user": raw, "role": role}
    return {"communication_user": text}


def _rooms(settings: Settings, args: argparse.Namespace) -> int:
    with _client(settings, args) as callq:
        if args.rooms_command == "get":
            _print_json(callq.get_room(args.room_id))
        elif args.rooms_command == "create":
            _print_json(callq.create_room(valid_until=args.valid_until, pstn_dial_out_enabled=args.dial_out or None,
                                          participants=args.participant or None))
        else:
            for room in callq.list_rooms():
                call = room.get("call") if isinstance(room.get("call"), dict) else {}
                print(f"{room.get('id')}  until {room.get('valid_until', '-')}  "
                      f"dial-out {'on' if room.get('pstn_dial_out_enabled') else 'off'}  "
                      f"call {(call or {}).get('state', '-')}")
    return 0


def _webhooks(settings: Settings, args: argparse.Namespace) -> int:
    with _client(settings, args) as callq:
        action = args.webhooks_command
        if action == "create":
            _print_json(callq.create_webhook(args.url, events=args.event or None, description=args.description))
        elif action == "test":
            _print_json(callq.test_webhook(args.webhook_id))
        elif action == "replay":
            _print_json(callq.replay_webhook(args.webhook_id, since=args.since, since_seq=args.since_seq,
                                             call_connection_id=args.call))
        elif action == "deliveries":
            for d in callq.webhook_deliveries(args.webhook_id, status=args.status):
                code = d.get("last_status_code") or d.get("last_error") or "-"
                print(f"{d['id']}  {d['type']:<17} {d['status']:<9} seq {d['seq']:<4} attempts {d['attempts']:<2} "
                      f"last {code}  {d.get('call_connection_id') or d.get('room_id') or ''}")
        else:
            for hook in callq.list_webhooks()["items"]:
                health = hook["health"]
                print(f"{hook['id']}  {hook['state']:<8} {','.join(hook['events'])}  {hook['url']}  "
                      f"failures {health['consecutive_failures']}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare connect, wait, tail, rooms and webhooks on the ``callq`` parser."""
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument("--api-url", help="the callq API (default: http://127.0.0.1:CALLQ_API_PORT)")
    api.add_argument("--api-key", help="the API key (default: CALLQ_API_KEYS, else the one `callq up` generated)")
    waits = argparse.ArgumentParser(add_help=False)
    waits.add_argument("--timeout", type=float, default=60.0, help="seconds to wait at most (default 60)")

    connect = sub.add_parser("connect", parents=[api, waits], help="connect callq to a room's call")
    connect.add_argument("room")
    connect.add_argument("--wait", action="store_true", help="wait for the outcome and print the command")
    connect.set_defaults(run=_connect)
    wait = sub.add_parser("wait", parents=[api, waits], help="wait for a command to end and print it")
    wait.add_argument("command_id", metavar="COMMAND")
    wait.set_defaults(run=_wait)
    tail = sub.add_parser("tail", parents=[api], help="follow a call's events live until it disconnects")
    tail.add_argument("call_connection_id", metavar="CALL")
    tail.set_defaults(run=_tail)

    rooms = sub.add_parser("rooms", help="list, show or create rooms")
    rooms_sub = rooms.add_subparsers(dest="rooms_command", required=True, metavar="ACTION")
    rooms_sub.add_parser("list", parents=[api], help="your rooms").set_defaults(run=_rooms)
    get = rooms_sub.add_parser("get", parents=[api], help="one room as ACS has it now")
    get.add_argument("room_id", metavar="ID")
    get.set_defaults(run=_rooms)
    create = rooms_sub.add_parser("create", parents=[api], help="create a room at ACS")
    create.add_argument("--participant", action="append", type=participant, metavar="RAW:ROLE",
                        help=f"an ACS user, optionally with a role ({', '.join(ROLES)}); repeatable")
    create.add_argument("--valid-until", metavar="ISO", help="RFC 3339 time with an offset (default: +180 days)")
    create.add_argument("--dial-out", action="store_true", help="allow dialling phone numbers from the room")
    create.set_defaults(run=_rooms)

    hooks = sub.add_parser("webhooks", help="webhook endpoints: list, create, test, deliveries, replay")
    hooks_sub = hooks.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    hooks_sub.add_parser("list", parents=[api], help="your endpoints and their health").set_defaults(run=_webhooks)
    made = hooks_sub.add_parser("create", parents=[api], help="register an endpoint (prints its secret, once)")
    made.add_argument("url")
    made.add_argument("--event", action="append", metavar="TYPE",
                      help="command.succeeded, command.failed, call.event, room.event; repeatable (default: all)")
    made.add_argument("--description")
    made.set_defaults(run=_webhooks)
    for name, text in (("test", "send a webhook.test message"),
                       ("deliveries", "an endpoint's deliveries, newest first"),
                       ("replay", "send messages again: --since TIME, or --since-seq N --call CC")):
        action = hooks_sub.add_parser(name, parents=[api], help=text)
        action.add_argument("webhook_id", metavar="ID")
        action.set_defaults(run=_webhooks)
        if name == "deliveries":
            action.add_argument("--status", choices=("pending", "succeeded", "failed"))
        if name == "replay":
            action.add_argument("--since", metavar="ISO")
            action.add_argument("--since-seq", type=int, metavar="N")
            action.add_argument("--call", metavar="CC")

"""Build a Celery task message exactly as kombu's Redis transport would push it.

The API records the idempotency key, creates the command and pushes this message in one Lua script
(see ``workers.ledger.ACCEPT_LUA``), which is both atomic and faster than kombu's synchronous
producer. ``tests/integration/test_publish.py`` proves a real worker consumes what this builds.

Building a message through Celery (``as_task_v2``: headers, ``saferepr`` of the arguments, the node name)
costs more than the rest of an accept; so the message of each task is built once, with marks where the
task id, its one argument and the delivery tag go, and each accept fills the marks in. Only ids that need
no JSON escaping take that path; anything else is built in full.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid

from celery import Celery

from tasks.versions import require_tested

require_tested("celery")  # as_task_v2 is Celery's internal message builder; refuse an untested minor

_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,200}")  # appear verbatim in JSON and in repr(): safe to fill in
_TASK_ID, _ARG, _TAG = "callqtaskidmark7c1e", "callqargmark0b9d", "callqtagmark4f2a"
# (app, task name, queue, pid): the message with marks, and its body document with the argument's mark
_templates: dict[tuple[int, str, str, int], tuple[str, str]] = {}


def task_message(app: Celery, name: str, task_id: str, args: list[str], *, queue: str) -> str:
    """The JSON document kombu's Redis transport LPUSHes for ``app.send_task(name, args, task_id=...)``."""
    if len(args) != 1 or not _PLAIN.fullmatch(task_id) or not _PLAIN.fullmatch(args[0]):
        return build_message(app, name, task_id, args, queue=queue)
    # The pid is in the key because the message names its origin (pid@host), and forks must not inherit it.
    key = (id(app), name, queue, os.getpid())
    template = _templates.get(key)
    if template is None:
        message = json.loads(build_message(app, name, _TASK_ID, [_ARG], queue=queue))
        body = base64.b64decode(message["body"]).decode("utf-8")
        message["body"], message["properties"]["delivery_tag"] = "callqbodymark", _TAG
        template = _templates[key] = (json.dumps(message), body)
    text, body = template
    encoded = base64.b64encode(body.replace(_ARG, args[0]).encode("utf-8")).decode("ascii")
    return (text.replace(_TASK_ID, task_id).replace(_ARG, args[0]).replace(_TAG, str(uuid.uuid4()))
            .replace("callqbodymark", encoded))


def build_message(app: Celery, name: str, task_id: str, args: list[str], *, queue: str) -> str:
    """``task_message`` built in full through Celery, every time."""
    headers, properties, body, _ = app.amqp.as_task_v2(task_id, name, args=args, kwargs={}, ignore_result=None)
    properties = {
        **properties,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},  # as kombu: anonymous exchange, queue as key
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    raw_body = json.dumps(body).encode("utf-8")
    return json.dumps({
        "body": base64.b64encode(raw_body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    })

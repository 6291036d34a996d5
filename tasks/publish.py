"""Build a Celery task message exactly as kombu's Redis transport would push it.

The API records the idempotency key, creates the command and pushes this message in one Lua script
(see ``workers.ledger.ACCEPT_LUA``), which is both atomic and faster than kombu's synchronous
producer. ``tests/integration/test_publish.py`` proves a real worker consumes what this builds.
"""

from __future__ import annotations

import base64
import json
import uuid

from celery import Celery


def task_message(app: Celery, name: str, task_id: str, args: list[str], *, queue: str) -> str:
    """The JSON document kombu's Redis transport LPUSHes for ``app.send_task(name, args, task_id=...)``."""
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

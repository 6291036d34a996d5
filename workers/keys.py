"""Every Redis key callq uses, in one place, all under ``callq:``."""

from __future__ import annotations

# Terminal commands publish their id here; API processes hold one subscription each for long-polls.
COMMAND_DONE_CHANNEL = "callq:notify:command-done"
WORKERS_ZSET = "callq:workers"
# Every command that has not ended, scored by when the sweeper should next look at it (epoch ms).
ACTIVE_ZSET = "callq:active"
SWEEP_LOCK = "callq:sweep:lock"


COMMAND_PREFIX = "callq:cmd:"


def command_key(command_id: str) -> str:
    return f"{COMMAND_PREFIX}{command_id}"


def idempotency_key(client: str, key: str) -> str:
    # Scoped per client: two clients choosing the same key never see each other's commands.
    return f"callq:idem:{client}:{key}"


def call_key(call_connection_id: str) -> str:
    return f"callq:call:{call_connection_id}"


def room_call_key(room_id: str) -> str:
    """The call connection callq most recently made to this room (its call hash says if it is still live)."""
    return f"callq:room:{room_id}:call"


def call_commands_key(call_connection_id: str) -> str:
    return f"callq:call:{call_connection_id}:commands"


def call_events_key(call_connection_id: str) -> str:
    return f"callq:call:{call_connection_id}:events"


def recording_key(recording_id: str) -> str:
    return f"callq:rec:{recording_id}"


def recording_commands_key(recording_id: str) -> str:
    return f"callq:rec:{recording_id}:commands"


def event_seen_key(event_id: str) -> str:
    return f"callq:evt:{event_id}"


def queue_key(queue: str) -> str:
    """The Redis list kombu's Redis transport uses for a queue at priority 0."""
    return queue

"""Every Redis key callq uses, in one place, all under ``callq:``."""

from __future__ import annotations

from urllib.parse import urlsplit

# Terminal commands publish their id here; API processes hold one subscription each for long-polls.
COMMAND_DONE_CHANNEL = "callq:notify:command-done"
WORKERS_ZSET = "callq:workers"
# Every command that has not ended, scored by when the sweeper should next look at it (epoch ms).
ACTIVE_ZSET = "callq:active"
SWEEP_LOCK = "callq:sweep:lock"
# Written just before each WAIT (workers/replication.py): its offset covers every earlier write on any connection.
REPLICATION_BARRIER = "callq:replication:barrier"
# Calls not known to have ended, scored by when callq last heard of them (epoch ms): the stale-call sweep asks ACS
# about those silent for long (Runtime.sweep_calls).
LIVE_CALLS = "callq:calls:live"
WAIT_DEADLINES = "callq:wait:deadlines"  # waiting command id → when to reconcile it (ms; re-armed as handed out)


COMMAND_PREFIX = "callq:cmd:"


def command_key(command_id: str) -> str:
    return f"{COMMAND_PREFIX}{command_id}"


def idempotency_key(client: str, key: str) -> str:
    # Scoped per client: two clients choosing the same key never see each other's commands.
    return f"callq:idem:{client}:{key}"


CALL_PREFIX = "callq:call:"
CALL_COMMANDS_SUFFIX = ":commands"
# A call's lane: its commands not yet ended, in acceptance order (what per-call order looks at; the commands list
# keeps every command, for reads).
CALL_LANE_SUFFIX = ":lane"
# The interrupts among them (a set): what lets a kick stop at the head of a long lane (lib.lua's kick_lane).
CALL_INTERRUPTS_SUFFIX = ":interrupts"


PENDING_SUFFIX = ":pending"  # the set of a call's (or a client's) commands accepted and not yet ended
CLIENT_PREFIX = "callq:client:"


def call_pending_key(call_connection_id: str) -> str:
    return f"{CALL_PREFIX}{call_connection_id}{PENDING_SUFFIX}"


def client_pending_key(client: str) -> str:
    return f"{CLIENT_PREFIX}{client}{PENDING_SUFFIX}"


READY_SUFFIX = ":ready"  # a client's runnable work waiting for its turn in the broker (lib.lua's fair_push)
# Set for SPARSE_MS each time a client's work is dispatched: a client without it is a sparse flow, whose message goes
# ahead of the window (lib.lua's dispatch).
DISPATCHED_SUFFIX = ":dispatched"
SPARSE_MS = 1000
# The quiet window (lib.lua's dispatch, claim.lua): for QUIET_WINDOW_MS after a sparse flow's command is dispatched,
# workers hold back other clients' sends that they have not claimed yet, so the quiet command runs beside fewer of a
# flood's; a window opens at most once per QUIET_EVERY_MS (here: at most half the time, whatever the number of quiet
# clients). QUIET_MARK is the record's field that lets the sparse flow's own command through.
QUIET_WINDOW = "callq:fair:quiet"
QUIET_ARMED = "callq:fair:quiet:armed"
QUIET_WINDOW_MS = 15
QUIET_EVERY_MS = 30
QUIET_MARK = "quiet"
# The clients that have runnable work waiting, each once, served in turn (lib.lua's dispatch).
FAIR_RING = "callq:fair:ring"
# A list as long as all clients' ready lists together (one "1" each): the backlog for scalers that read a list's
# length (KEDA's Redis scaler), since the command queue itself never holds more than the dispatch window.
FAIR_BACKLOG = "callq:fair:backlog"


def client_ready_key(client: str) -> str:
    return f"{CLIENT_PREFIX}{client}{READY_SUFFIX}"


def client_dispatched_key(client: str) -> str:
    """Present for SPARSE_MS after the client's work was last dispatched (absent: a sparse flow)."""
    return f"{CLIENT_PREFIX}{client}{DISPATCHED_SUFFIX}"


def client_accept_budget_key(client: str) -> str:
    """The theoretical arrival time of the client's accept budget (GCRA, ms)."""
    return f"{CLIENT_PREFIX}{client}:accept-tat"


def call_key(call_connection_id: str) -> str:
    return f"{CALL_PREFIX}{call_connection_id}"


ROOM_PREFIX = "callq:room:"
ROOM_CALL_SUFFIX = ":call"


def room_key(room_id: str) -> str:
    """A room callq manages (created or adopted by a client): its owner, window, flag, automation, current call."""
    return f"{ROOM_PREFIX}{room_id}"


def client_rooms_key(client: str) -> str:
    """The rooms a client manages through callq (zset, all scores 0: paged by id)."""
    return f"{CLIENT_PREFIX}{client}:rooms"


def room_events_key(room_id: str) -> str:
    """The room's timeline: its Event Grid events (stream), whether or not a client manages the room."""
    return f"{ROOM_PREFIX}{room_id}:events"


def room_live_key(room_id: str) -> str:
    """The serverCallId of the room's call while it runs (CallStarted → CallEnded), managed room or not."""
    return f"{ROOM_PREFIX}{room_id}:live"


def room_ended_key(room_id: str) -> str:
    """serverCallIds of the room's calls that have ended (set): a CallStarted delivered after its CallEnded
    (Event Grid keeps no order) must not reopen the call nor start a run."""
    return f"{ROOM_PREFIX}{room_id}:ended"


def room_run_key(room_id: str, server_call_id: str) -> str:
    """The automation run of one room call: one per (room, serverCallId), which makes it exactly once."""
    return f"{ROOM_PREFIX}{room_id}:run:{server_call_id}"


def room_run_commands_key(room_id: str, server_call_id: str) -> str:
    return f"{room_run_key(room_id, server_call_id)}:commands"


def room_run_lock_key(room_id: str, server_call_id: str) -> str:
    return f"{room_run_key(room_id, server_call_id)}:lock"


def room_runs_key(room_id: str) -> str:
    """The room's runs (zset: serverCallId scored by when CallStarted arrived, ms)."""
    return f"{ROOM_PREFIX}{room_id}:runs"


def client_automation_key(client: str) -> str:
    """The client's default automation, for its rooms without one of their own (JSON)."""
    return f"{CLIENT_PREFIX}{client}:automation"


def server_call_room_key(server_call_id: str) -> str:
    """The room a server call belongs to (from its Event Grid events): events that name only the call, such as
    RecordingFileStatusUpdated, find their room here."""
    return f"callq:servercall:{server_call_id}:room"


def grid_event_seen_key(event_id: str) -> str:
    """An Event Grid event already recorded (Event Grid delivers at least once, for up to a day)."""
    return f"callq:eg:{event_id}"


def room_call_key(room_id: str) -> str:
    """The call connection callq most recently made to this room (its call hash says if it is still live)."""
    return f"{ROOM_PREFIX}{room_id}{ROOM_CALL_SUFFIX}"


def call_commands_key(call_connection_id: str) -> str:
    return f"{CALL_PREFIX}{call_connection_id}{CALL_COMMANDS_SUFFIX}"


def call_lane_key(call_connection_id: str) -> str:
    return f"{CALL_PREFIX}{call_connection_id}{CALL_LANE_SUFFIX}"


def call_interrupts_key(call_connection_id: str) -> str:
    return f"{CALL_PREFIX}{call_connection_id}{CALL_INTERRUPTS_SUFFIX}"


CALL_EVENTS_SUFFIX = ":events"


def call_events_key(call_connection_id: str) -> str:
    return f"{CALL_PREFIX}{call_connection_id}{CALL_EVENTS_SUFFIX}"


def recording_key(recording_id: str) -> str:
    return f"callq:rec:{recording_id}"


def recording_commands_key(recording_id: str) -> str:
    return f"callq:rec:{recording_id}:commands"


def recording_early_events_key(recording_id: str) -> str:
    """Events of the recording that came before callq knew which of its calls the recording is on (list of event
    JSON): ingest.lua keeps them, sent.lua puts them on that call's timeline when the start's answer names it."""
    return f"callq:rec:{recording_id}:early"


def recording_files_key(recording_id: str) -> str:
    """The recording's file chunks as RecordingFileStatusUpdated announced them (hash: index → chunk JSON)."""
    return f"callq:rec:{recording_id}:files"


def event_seen_key(event_id: str) -> str:
    return f"callq:evt:{event_id}"


def steps_queue(queue: str) -> str:
    """The queue beside ``queue`` for work that is not a command's send (reconciles, schedule steps)."""
    return f"{queue}.steps"


def queue_key(queue: str) -> str:
    """The Redis list kombu's Redis transport uses for a queue at priority 0."""
    return queue


# --- the shared ACS rate budget (workers/ratelimit.py), one per ACS resource -----------------------------


def rate_resource(acs_endpoint: str) -> str:
    """Everything pointed at one ACS resource (its host) shares one budget."""
    return urlsplit(acs_endpoint).netloc or acs_endpoint


def rate_tat_key(resource: str) -> str:
    return f"callq:rl:{resource}"


def rate_pause_key(resource: str) -> str:
    return f"callq:rl:{resource}:paused"


# --- operator figures (workers/metrics.py, api/ui_data.py) ----------------------------------------------

METRICS_PREFIX = "callq:metrics:"
OPS_ATTENTION = "callq:ops:attention"  # command id → when it last retried, was throttled or failed (ms)
OPS_CALLS = "callq:ops:calls"  # call connection id → its last activity (ms)

# --- recording schedules (workers/schedules.py, workers/occurrences.py) ---------------------------------

ACTIVE_SCHEDULES = "callq:scheds:active"  # ids of schedules that still have occurrences to book
SCHEDULE_WAKES = "callq:scheds:wakes"  # "{id} {planned}" of unfinished runs, scored by when they next need a step


def schedule_key(schedule_id: str) -> str:
    return f"callq:sched:{schedule_id}"


def client_schedules_key(client: str) -> str:
    """Every schedule of a client, all scored 0 so ids (time-ordered) page lexically."""
    return f"callq:client:{client}:scheds"


def runs_key(schedule_id: str) -> str:
    return f"callq:sched:{schedule_id}:runs"


def run_key(schedule_id: str, planned: int) -> str:
    return f"callq:sched:{schedule_id}:run:{planned}"


def run_commands_key(schedule_id: str, planned: int) -> str:
    return f"callq:sched:{schedule_id}:run:{planned}:commands"


def claim_key(schedule_id: str, planned: int) -> str:
    """``SET NX`` by the first fire of an occurrence: a second beat's or a catch-up's fire finds it taken."""
    return f"callq:sched:{schedule_id}:run:{planned}:claim"


def run_lock_key(schedule_id: str, planned: int) -> str:
    return f"callq:sched:{schedule_id}:run:{planned}:lock"


# --- outbound webhooks (workers/webhooks.py, workers/delivery.py) ----------------------------------------

WEBHOOK_PREFIX = "callq:webhook:"  # an endpoint's hash; its lanes, seqs and message index hang below it
WEBHOOK_MSG_PREFIX = "callq:whmsg:"  # one message (a delivery) to one endpoint
CLIENT_WEBHOOKS_SUFFIX = ":webhooks"  # a client's enabled endpoints: endpoint id → the event types it takes
# The endpoints' lanes with a message due, "{endpoint} {lane}" scored by when (ms); a lane being delivered is scored
# by when its claim lapses, so a worker that died mid-delivery gives it back.
WEBHOOKS_DUE = "callq:webhooks:due"
WEBHOOKS_CHANNEL = "callq:notify:webhooks"  # a message was added: deliverers look at WEBHOOKS_DUE now


def webhook_key(endpoint_id: str) -> str:
    return f"{WEBHOOK_PREFIX}{endpoint_id}"


def webhook_lane_key(endpoint_id: str, lane: str) -> str:
    """The messages of one (endpoint, call) not yet delivered, oldest first: only the head is ever in flight."""
    return f"{WEBHOOK_PREFIX}{endpoint_id}:lane:{lane}"


def webhook_lanes_key(endpoint_id: str) -> str:
    """The endpoint's lanes that hold messages (set): re-enabling an endpoint makes each due again."""
    return f"{WEBHOOK_PREFIX}{endpoint_id}:lanes"


def webhook_messages_key(endpoint_id: str) -> str:
    """Every message to the endpoint still kept (zset by when it was made, ms): history and replay."""
    return f"{WEBHOOK_PREFIX}{endpoint_id}:msgs"


def webhook_message_key(message_id: str) -> str:
    return f"{WEBHOOK_MSG_PREFIX}{message_id}"


def client_webhooks_key(client: str) -> str:
    """The client's enabled endpoints and what each subscribes to (hash): what a fan-out reads."""
    return f"{CLIENT_PREFIX}{client}{CLIENT_WEBHOOKS_SUFFIX}"


def client_webhooks_all_key(client: str) -> str:
    """Every endpoint of the client, enabled or not (zset by creation, ms)."""
    return f"{CLIENT_PREFIX}{client}:webhooks:all"

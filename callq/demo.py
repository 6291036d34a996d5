"""``callq demo``: drive a room-call scenario through the public HTTP API and print its timeline.

Only two things are not callq's public API: the simulator's admin calls that create the room and have
its participants start the call (on real ACS, people joining the room do that).
"""

from __future__ import annotations

import io
import sys
import time
import uuid
import wave
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import httpx
import redis

from callq.client import CallqAPIError, Client
from callq.receiver import Receiver
from workers import redis_clients
from workers.settings import Settings

TEACHER = "8:acs:demo-teacher"
STUDENT = "8:acs:demo-student"
PARENT_PHONE = "+14255550123"   # dialled into the class; the simulator answers it
CALLER_ID = "+18005550199"      # the ACS number callq dials from
SCHEDULE_LEAD_S = 6             # > beat's 5 s loop: the new entry is seen before it is due
SCHEDULE_WAIT_S = 30            # how long the demo waits for its run to end
BEAT_LOCK_KEY = "callq:redbeat:lock"  # held (and renewed every few seconds) by the running beat


class DemoError(Exception):
    """Raised when a demo step cannot continue; the message says which and why."""


@dataclass
class Step:
    command: dict[str, Any]

    @property
    def latency_ms(self) -> float | None:
        done, created = self.command.get("resolved_at"), self.command.get("created_at")
        if not done or not created:
            return None
        parse = datetime.fromisoformat
        return (parse(done.replace("Z", "+00:00")) - parse(created.replace("Z", "+00:00"))).total_seconds() * 1000


class Demo:
    def __init__(self, settings: Settings, api_key: str, out: TextIO) -> None:
        self.settings = settings
        self.out = out
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{settings.api_port}", timeout=70,
                                headers={"Authorization": f"Bearer {api_key}"})
        self.sim = httpx.Client(base_url=settings.acs_endpoint, timeout=10)
        self.client = Client(f"http://127.0.0.1:{settings.api_port}", api_key)
        self.receiver: Receiver | None = None
        self.steps: list[Step] = []
        self.recordings: list[str] = []  # the class recordings made, the one to download first

    def close(self) -> None:
        self.api.close()
        self.sim.close()
        self.client.close()
        if self.receiver is not None:
            self.receiver.__exit__()

    def _check(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        if resp.status_code >= 400:
            raise DemoError(f"{what} failed: HTTP {resp.status_code} {resp.text[:300]}")
        if resp.status_code == 204:
            return {}
        body: dict[str, Any] = resp.json()
        return body

    def start_room_call(self) -> str:
        room = self._check(self.sim.post("/_sim/rooms", json={"pstn_dial_out_enabled": True}), "creating a room")
        room_id = str(room["room_id"])
        self._check(self.sim.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER, STUDENT]}),
                    "starting the room call")
        return room_id

    def command(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST a command with a fresh Idempotency-Key, then long-poll it to a terminal state."""
        accepted = self._check(self.api.post(path, json=body or {}, headers={"Idempotency-Key": str(uuid.uuid4())}),
                               f"POST {path}")
        done = self._check(self.api.get(f"/v1/commands/{accepted['id']}", params={"wait": 30}),
                           f"waiting for {accepted['id']}")
        step = Step(done)
        self.steps.append(step)
        self._print_step(len(self.steps), step)
        return done

    def _print_step(self, n: int | str, step: Step) -> None:
        cmd = step.command
        resolved = (cmd.get("resolved_by") or {}).get("type") or (cmd.get("error") or {}).get("code") or "-"
        latency = f"{step.latency_ms:.0f} ms" if step.latency_ms is not None else "-"
        extra = ""
        if cmd["type"] == "connect" and cmd.get("call_connection_id"):
            extra = f"call {cmd['call_connection_id']}"
        elif cmd["type"] == "start_recording" and cmd.get("recording_id"):
            extra = f"recording {cmd['recording_id'][:24]}…"
        elif cmd["status"] == "failed":
            extra = str((cmd.get("error") or {}).get("message", ""))[:60]
        print(f"  {n:>2}  {cmd['type']:<19} {cmd['status']:<10} {resolved:<27} {latency:>7}  {extra}", file=self.out)

    def subscribe(self) -> dict[str, Any] | None:
        """A webhook endpoint to a receiver in this process, which checks every signature as a client's app would."""
        receiver = Receiver().__enter__()
        self.receiver = receiver
        try:
            hook = self.client.create_webhook(receiver.url, events=["*"], description="callq demo")
        except CallqAPIError as exc:  # e.g. CALLQ_WEBHOOK_ALLOWED_NETWORKS does not let callq reach this machine
            print(f"webhooks: skipped, {exc}", file=self.out)
            return None
        receiver.secrets = [hook["secret"]]
        return hook

    def webhooks(self, hook: dict[str, Any] | None, cc: str, last_command: str) -> bool:
        """What the receiver got for the call: every message in order (seq 1, 2, 3 …), each signature valid."""
        if hook is None or self.receiver is None:
            return True
        try:
            got = self.receiver.wait_for(lambda rs: any(
                (d.body.get("data", {}).get("command") or {}).get("id") == last_command for d in rs), timeout_s=30)
        finally:
            self.client.delete_webhook(hook["id"])
        lane = [d for d in got if d.lane == cc]
        in_order = [d.seq for d in lane] == list(range(1, len(lane) + 1))
        valid = all(d.valid for d in lane)
        kinds = sorted({d.type for d in lane})
        print(f"webhooks: {len(lane)} messages about call {cc} reached the receiver "
              f"({', '.join(kinds)}): seq 1-{len(lane)} in order {'yes' if in_order else 'NO'}, "
              f"signatures valid {'yes' if valid else 'NO'}", file=self.out)
        return in_order and valid

    def run(self) -> int:
        hook = self.subscribe()
        room_id = self.start_room_call()
        print(f"callq demo: room {room_id}, ACS at {self.settings.acs_endpoint}", file=self.out)
        print(f"  {'#':>2}  {'command':<19} {'status':<10} {'resolved by':<27} {'latency':>7}", file=self.out)
        connected = self.command(f"/v1/rooms/{room_id}/connect")
        if connected["status"] != "succeeded":
            raise DemoError(f"connect did not succeed: {connected.get('error')}")
        cc = connected["call_connection_id"]
        parent = {"phone_number": PARENT_PHONE}
        self.command(f"/v1/calls/{cc}/participants", {**parent, "source_caller_id": CALLER_ID,
                                                      "invitation_timeout": 30})
        self.command(f"/v1/calls/{cc}/dtmf", {**parent, "tones": "123#"})
        recording = self.command(f"/v1/calls/{cc}/recordings", {"content": "audio", "channel": "mixed",
                                                                 "format": "wav"})
        if recording.get("recording_id"):
            rid = recording["recording_id"]
            self.recordings.append(rid)
            for action in ("pause", "resume", "stop"):
                self.command(f"/v1/recordings/{rid}/{action}")
        self.command(f"/v1/calls/{cc}/play", {"text": "This class is being recorded."})
        self.command(f"/v1/calls/{cc}/participants/remove", parent)
        hung_up = self.command(f"/v1/calls/{cc}/hang-up", {"for_everyone": True})
        ok = sum(1 for s in self.steps if s.command["status"] == "succeeded")
        print(f"demo: {ok} of {len(self.steps)} commands succeeded", file=self.out)
        told_ok = self.webhooks(hook, cc, hung_up["id"])
        scheduled_ok = self.scheduled_recording()
        automated_ok = self.automation()
        downloaded_ok = self.class_recording()
        return 0 if ok == len(self.steps) and told_ok and scheduled_ok and automated_ok and downloaded_ok else 1

    def class_recording(self) -> bool:
        """The class recording's file, once ACS announced it: downloaded, its length read from the WAV header.

        The scheduled session's recording if it has a file by now, else the seed scenario's.
        """
        if not self.recordings or not self._eventgrid_wired():
            print("recording file: skipped, no Event Grid subscription to callq announces files (callq up wires one)",
                  file=self.out)
            return True

        def announced() -> tuple[str, dict[str, Any]] | None:
            for rid in self.recordings:
                files = self._check(self.api.get(f"/v1/recordings/{rid}/files"), "listing files")["items"]
                if files:
                    return rid, files[0]
            return None

        rid, listed = self._poll(announced, "the class recording's file")
        got = self.api.get(listed["links"]["content"])
        if got.status_code != 200:
            raise DemoError(f"downloading {listed['links']['content']} failed: HTTP {got.status_code}")
        try:
            with wave.open(io.BytesIO(got.content)) as audio:
                rate, channels, frames = audio.getframerate(), audio.getnchannels(), audio.getnframes()
        except (wave.Error, EOFError):
            print(f"recording file: {rid[:24]}… file {listed['index']}: {len(got.content)} bytes of "
                  f"{listed['content_type']}, not a WAV to read a length from", file=self.out)
            return True
        seconds = frames / rate
        print(f"recording file: {rid[:24]}… file {listed['index']} downloaded, {len(got.content)} bytes, WAV {rate} Hz "
              f"x {channels}: {seconds:.3f} s (ACS: {listed['duration_s']} s)", file=self.out)
        return listed["duration_s"] is None or abs(seconds - listed["duration_s"]) < 0.001

    def automation(self) -> bool:
        """A room made through callq with an automation; its call starts in the simulator and callq joins, records
        and welcomes on its own (told by Event Grid's CallStarted), then sees the call end (CallEnded).

        Rows are numbered a1, a2, …
        """
        if not self._eventgrid_wired():
            print("automation: skipped, the simulator has no Event Grid subscription to callq (callq up wires one)",
                  file=self.out)
            return True
        people = [{"communication_user": TEACHER, "role": "presenter"}, {"communication_user": STUDENT}]
        room = self._check(self.api.post("/v1/rooms", json={"participants": people},
                                         headers={"Idempotency-Key": str(uuid.uuid4())}), "creating a room")
        room_id = room["id"]
        steps: list[dict[str, Any]] = [{"type": "connect"},
                                       {"type": "start_recording", "body": {"content": "audio", "channel": "mixed",
                                                                            "format": "wav"}},
                                       {"type": "play", "body": {"text": "Welcome to the class."}}]
        self._check(self.api.put(f"/v1/rooms/{room_id}/automation", json={"on_call_started": steps}),
                    "setting the automation")
        print(f"automation: room {room_id} made through callq; on its call's start: "
              f"{', '.join(s['type'] for s in steps)}", file=self.out)
        self._check(self.sim.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER, STUDENT]}),
                    "starting the room call")
        run = self._poll(lambda: next((r for r in self._check(self.api.get(
            f"/v1/rooms/{room_id}/automation/runs"), "reading runs")["items"]
            if r["state"] in ("succeeded", "failed", "ended")), None), "the automation's run")
        for n, step in enumerate(run["steps"], 1):
            done = self._check(self.api.get(f"/v1/commands/{step['command_id']}", params={"wait": 30}),
                               f"waiting for {step['command_id']}")
            self._print_step(f"a{n}", Step(done))
        print(f"automation: run {run['id']} {run['state']} (callq joined on CallStarted)", file=self.out)
        self._check(self.sim.delete(f"/_sim/rooms/{room_id}/call"), "ending the room call")
        self._poll(lambda: _call_state(self._check(self.api.get(f"/v1/rooms/{room_id}"), "reading the room")) ==
                   "ended" or None, "CallEnded")
        events = self._check(self.api.get(f"/v1/rooms/{room_id}/events"), "reading the room's events")["items"]
        print(f"automation: the call ended; the room's timeline: "
              f"{', '.join(e['type'].rsplit('.', 1)[-1] for e in events)}", file=self.out)
        return bool(run["state"] == "succeeded")

    def _eventgrid_wired(self) -> bool:
        """Whether the simulator's Event Grid delivers to a callq endpoint (validated: callq answered its handshake)."""
        try:
            subscriptions = self.sim.get("/_sim/eventgrid/subscriptions").json()
        except (httpx.HTTPError, ValueError):
            return False
        return any(s.get("status") == "Succeeded" and str(s.get("endpoint_base_url", "")).endswith(
            "/v1/eventgrid/events") for s in subscriptions if isinstance(s, dict))

    def _poll(self, found: Any, what: str) -> Any:
        deadline = time.monotonic() + SCHEDULE_WAIT_S
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            time.sleep(0.25)  # a demo polling a public API, not a test
        raise DemoError(f"{what} did not come within {SCHEDULE_WAIT_S} s")

    def scheduled_recording(self) -> bool:
        """A one-off recording scheduled a few seconds ahead on a second room; beat and the worker run it.

        Its rows are numbered s1, s2, … after the seed scenario's summary, which keeps its ten rows and count.
        """
        if not _beat_running(self.settings):
            print("scheduled recording: skipped, no beat is running (start one with `callq beat`)", file=self.out)
            return True
        room_id = self.start_room_call()
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=SCHEDULE_LEAD_S)
        body: dict[str, Any] = {"room_id": room_id, "start_at": start.isoformat().replace("+00:00", "Z"),
                                "duration": "PT3S", "pause_windows": [{"offset": "PT1S", "duration": "PT1S"}]}
        schedule = self._check(self.api.post("/v1/recording-schedules", json=body,
                                             headers={"Idempotency-Key": str(uuid.uuid4())}), "creating a schedule")
        print(f"scheduled recording {schedule['id']}: room {room_id} at {schedule['next_run_at']} for "
              f"{schedule['duration']}, paused {body['pause_windows'][0]['offset']} in for "
              f"{body['pause_windows'][0]['duration']}", file=self.out)
        run = self._finished_run(schedule["id"])
        steps = [Step(self._check(self.api.get(f"/v1/commands/{issued['id']}", params={"wait": 30}),
                                  f"waiting for {issued['id']}")) for issued in run["commands"]]
        for n, step in enumerate(steps, 1):
            self._print_step(f"s{n}", step)
        ok = sum(1 for s in steps if s.command["status"] == "succeeded")
        print(f"scheduled: {ok} of {len(steps)} commands succeeded; run at {run['planned_at']}: {run['state']}",
              file=self.out)
        if run["state"] != "completed":
            raise DemoError(f"the scheduled recording ended {run['state']}: {run.get('error')}")
        if run.get("recording_id"):
            self.recordings.insert(0, run["recording_id"])  # the longer class: downloaded first if it has its file
        if run.get("call_connection_id"):  # callq joined the second room only to record it: leave
            self.api.post(f"/v1/calls/{run['call_connection_id']}/hang-up", json={"for_everyone": True},
                          headers={"Idempotency-Key": str(uuid.uuid4())})
        return ok == len(steps)

    def _finished_run(self, schedule_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + SCHEDULE_LEAD_S + SCHEDULE_WAIT_S
        while time.monotonic() < deadline:
            runs = self._check(self.api.get(f"/v1/recording-schedules/{schedule_id}/runs"), "reading runs")["items"]
            if runs and runs[0]["state"] in ("completed", "completed_early", "missed", "failed", "cancelled"):
                return dict(runs[0])
            time.sleep(0.25)  # a demo polling a public API, not a test
        raise DemoError(f"schedule {schedule_id} did not run within {SCHEDULE_WAIT_S} s of its time")


def _call_state(room: dict[str, Any]) -> str | None:
    call = room.get("call")
    return str(call["state"]) if isinstance(call, dict) else None


def _beat_running(settings: Settings) -> bool:
    """Whether a beat holds redbeat's lock (it renews it every few seconds, so a dead beat's lapses)."""
    client = redis_clients.sync_client(settings, decode_responses=False, socket_timeout=2)
    try:
        return bool(client.exists(BEAT_LOCK_KEY))
    except redis.RedisError:
        return False
    finally:
        client.close()


def run(settings: Settings, *, api_key: str, out: TextIO | None = None) -> int:
    """Run the demo against a running stack; returns a process exit code."""
    demo = Demo(settings, api_key, out or sys.stdout)
    try:
        return demo.run()
    except (DemoError, httpx.HTTPError) as exc:
        print(f"demo failed: {exc}", file=out or sys.stderr)
        return 1
    finally:
        demo.close()

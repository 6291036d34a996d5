"""ACS-shaped errors: an HTTP status plus ``{"error": {"code": "<string>", "message": ...}}``."""

from __future__ import annotations


class AcsError(Exception):
    """Raised by an operation to answer with ACS's error body; nothing has taken effect."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status}/{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, object]:
        """The JSON body ACS sends (``code`` is a string, as on the wire)."""
        return {"error": {"code": self.code, "message": self.message}}


def call_not_found() -> AcsError:
    """Unknown or already-disconnected call connection (real ACS answers this for an ended call)."""
    return AcsError(404, "8522", "Call not found.")


def invalid_request(message: str) -> AcsError:
    """The body is missing a field or has a bad value."""
    return AcsError(400, "8523", f"Invalid request: {message}")


def call_not_established() -> AcsError:
    """The connection exists but CallConnected has not happened yet."""
    return AcsError(400, "8501", "Action is not allowed when the call is not established.")


def call_terminated() -> AcsError:
    """The server call behind a recording has ended."""
    return AcsError(400, "8528", "Action failed, the call has been terminated.")


def media_operation_active() -> AcsError:
    """A play or recognize is already running and the request did not ask to interrupt it."""
    return AcsError(400, "8500", "Invalid media mode: another media operation is already active.")


def conflict(message: str) -> AcsError:
    """A parallel action on the same resource (e.g. a second invitation to the same number)."""
    return AcsError(409, "8519", f"Conflict: {message}")


def duplicate_recording() -> AcsError:
    """A recording on this call is already active or paused."""
    return AcsError(400, "8559", "Recording already initiated or in progress; it must be inactive first.")


def participant_not_present() -> AcsError:
    """The target participant is not (or no longer) in the call."""
    return AcsError(404, "8558", "Participant is not present in the call.")


def recording_not_found() -> AcsError:
    """Unknown or stopped recording id."""
    return AcsError(404, "8522", "Recording not found.")


def not_supported(what: str) -> AcsError:
    """An ACS operation the simulator does not implement."""
    return AcsError(405, "8520", f"{what} is not supported by the simulator.")


def unauthenticated() -> AcsError:
    """HMAC check failed; real ACS sends exactly this code and message."""
    return AcsError(401, "7509", "HMAC-SHA256 validation failed")

"""callq's error tree: every error has a stable machine ``code``; the API maps classes to HTTP statuses."""

from __future__ import annotations

from typing import Any


class CallqError(Exception):
    """Base of every error callq raises on purpose."""

    code = "internal"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code:
            self.code = code  # a more specific stable code than the class default


class ConfigError(CallqError):
    """Raised when a setting has a bad value; the message names the variable, never a secret."""

    code = "config_error"


class InvalidCommand(CallqError):
    """Raised when a request body or parameter fails validation."""

    code = "invalid_command"


class Unauthorized(CallqError):
    """Raised when a request carries no valid API key (or a callback no valid ACS token)."""

    code = "unauthorized"


class IdempotencyKeyMissing(CallqError):
    """Raised when a mutating request has no Idempotency-Key header."""

    code = "idempotency_key_missing"


class IdempotencyKeyInvalid(CallqError):
    """Raised when the Idempotency-Key header is malformed."""

    code = "idempotency_key_invalid"


class IdempotencyKeyReused(CallqError):
    """Raised when an Idempotency-Key is reused with another route or body."""

    code = "idempotency_key_reused"


class CommandNotFound(CallqError):
    """Raised when a command id is unknown to the calling client."""

    code = "command_not_found"


class ScheduleNotFound(CallqError):
    """Raised when a recording schedule id is unknown to the calling client."""

    code = "schedule_not_found"


class RoomNotFound(CallqError):
    """Raised when a room is unknown to the calling client (another client's room, or gone at ACS)."""

    code = "room_not_found"


class WebhookNotFound(CallqError):
    """Raised when a webhook endpoint (or one of its deliveries: code ``delivery_not_found``) is unknown to the
    calling client."""

    code = "webhook_not_found"


class Conflict(CallqError):
    """Raised when a request cannot be carried out in the resource's current state (e.g. a room another client
    already manages through callq)."""

    code = "conflict"


class CallEnded(CallqError):
    """Raised when a command targets a call that has already disconnected."""

    code = "call_ended"


class AcsError(CallqError):
    """Raised when ACS refuses a request; carries ACS's HTTP status, code and subcode."""

    code = "acs_error"

    def __init__(
        self, message: str, *, status: int | None = None, acs_code: str | None = None, acs_subcode: int | None = None,
        retry_after_s: float | None = None, retryable: bool = False, may_have_executed: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.acs_code = acs_code
        self.acs_subcode = acs_subcode
        self.retry_after_s = retry_after_s
        self.retryable = retryable
        self.may_have_executed = may_have_executed  # False only when ACS provably did not act (refused, 429)


class Refused(CallqError):
    """Raised when a new command meets one of the door's limits; nothing was recorded and its key stays free."""

    code = "too_many_pending"
    retryable = True

    def __init__(self, message: str, *, code: str, retry_after_s: float) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s

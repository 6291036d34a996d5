"""Request bodies, validated by pydantic (which also describes them in the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ConnectBody(Body):
    """``POST /v1/rooms/{room_id}/connect``: nothing is required; callq supplies callback and context."""


class HangUpBody(Body):
    """``POST /v1/calls/{call_connection_id}/hang-up``: end the call for everyone, or leave it (false)."""

    for_everyone: bool = True

"""Participants as callq stores them (raw ids: ``4:+16045550100``, ``8:acs:…``) and as the SDK wants them."""

from __future__ import annotations

import re

from azure.communication.callautomation import (
    CommunicationIdentifier,
    CommunicationUserIdentifier,
    PhoneNumberIdentifier,
)

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
ACS_USER = re.compile(r"^8:(acs|spool|gcch-acs|dod-acs):[A-Za-z0-9_\-.:]{1,200}$")


def raw_id(*, phone_number: str | None = None, communication_user: str | None = None) -> str:
    """The ACS raw id for one participant given either a phone number or an ACS user id."""
    if phone_number is not None:
        return f"4:{phone_number}"
    assert communication_user is not None, "validated upstream: exactly one of the two is set"
    return communication_user


def to_identifier(raw: str) -> CommunicationIdentifier:
    """The SDK identifier for a stored raw id."""
    if raw.startswith("4:"):
        return PhoneNumberIdentifier(raw[2:])
    return CommunicationUserIdentifier(raw)


def is_phone(raw: str) -> bool:
    return raw.startswith("4:")

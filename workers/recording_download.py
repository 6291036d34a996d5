"""Recording files at ACS: fetched (whole or a byte range) and deleted with HMAC-signed requests through the SDK.

Only a place ACS's own storage could be is ever asked, and asked with callq's signature: a location comes from an
event, and signing a request to a host an attacker named would hand out a request signed for the ACS resource.
:func:`check_location` allows ACS's storage hosts (the SDK's own list) against real ACS, and only the configured
endpoint against the simulator; anything else (a bring-your-own-storage blob, say) is refused before signing.

Against real ACS the SDK's ``download_recording`` / ``delete_recording`` make the requests. Their URL check accepts
only https on ACS's storage hosts, so the simulator (plain http on its own host) is reached with the same request
built here (``x-ms-host``: the resource's host; the path signed with the SDK's HMAC policy) through the same SDK
pipeline. Either way the shared rate budget is paid by the pipeline's policy (workers/ratelimit.py), and a range is
sent as the SDK's ``offset``/``length`` where it can express it: it sends no Range for offset 0 (it tests
``if start:``) and has no form for the last N bytes, so those go as a Range header.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from azure.communication.callautomation import CallAutomationClient
from azure.communication.callautomation.recording_url_validator import validate_recording_url
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, map_error
from azure.core.rest import HttpRequest, HttpResponse

from workers.errors import AcsError, CallqError, CommandNotFound, Conflict
from workers.reads import acs_errors
from workers.settings import Settings

_RANGE = re.compile(r"^bytes=(?:([0-9]{1,18})-([0-9]{0,18})|-([0-9]{1,18}))$")  # ASCII digits only
_ERRORS = {404: ResourceNotFoundError}
MAX_METADATA_BYTES = 1 << 20


class RangeNotSatisfiable(CallqError):
    """Raised when ACS answers 416: the range asked for starts past the file's end."""

    code = "range_not_satisfiable"

    def __init__(self, content_range: str | None) -> None:
        super().__init__("The requested range starts past the end of the file; ask for bytes within its length.")
        self.content_range = content_range  # "bytes */<length>", when ACS said it


@dataclass(frozen=True)
class ByteRange:
    """One HTTP byte range: ``first``-``last`` (``last`` None: to the end), or the last ``suffix`` bytes."""

    first: int | None = None
    last: int | None = None
    suffix: int | None = None

    @classmethod
    def parse(cls, header: str | None) -> ByteRange | None:
        """The single range a ``Range`` header asks for; None for no header and for one that is ignored (several
        ranges, another unit, bad syntax, last before first), as RFC 9110 lets a server ignore Range."""
        found = _RANGE.fullmatch((header or "").strip().replace(" ", ""))
        if found is None:
            return None
        first, last, suffix = found.groups()
        if suffix is not None:
            return cls(suffix=int(suffix)) if int(suffix) > 0 else None
        if last and int(last) < int(first):
            return None
        return cls(first=int(first), last=int(last) if last else None)

    @property
    def header(self) -> str:
        if self.suffix is not None:
            return f"bytes=-{self.suffix}"
        return f"bytes={self.first}-{'' if self.last is None else self.last}"

    def sdk_kwargs(self) -> dict[str, Any]:
        """``download_recording``'s offset/length where they can say it, else the header itself."""
        if self.first:  # > 0: see the module's docstring for 0 and suffixes
            return {"offset": self.first, "length": None if self.last is None else self.last - self.first + 1}
        return {"headers": {"Range": self.header}}


def check_location(url: str, settings: Settings) -> None:
    """Refuse (409 ``recording_file_not_downloadable``) a location callq must not sign a request for."""
    if settings.uses_real_acs:
        try:
            validate_recording_url(url, "location")
            return
        except (TypeError, ValueError):
            pass
    else:
        parts, acs = urlsplit(url), urlsplit(settings.acs_endpoint)
        if (parts.scheme, parts.netloc) == (acs.scheme, acs.netloc) and "{" not in url and "}" not in url:
            return
    raise Conflict("ACS announced this file at a location callq does not fetch from (not ACS's storage): with your "
                   "own storage, read it from your container.", code="recording_file_not_downloadable")


def _host(settings: Settings) -> str:
    """``x-ms-host``: the ACS resource's host name (the SDK's ``urlparse(endpoint).hostname``)."""
    return urlsplit(settings.acs_endpoint).hostname or ""


def _sent(client: CallAutomationClient, request: HttpRequest, ok: tuple[int, ...], *, stream: bool) -> HttpResponse:
    """``request`` through the SDK client's pipeline (HMAC, rate budget); raises as the SDK would on another status."""
    response = client._client.send_request(request, stream=stream)  # the SDK's own pipeline: see module docstring
    if response.status_code not in ok:
        response.read()
        map_error(status_code=response.status_code, response=response, error_map=_ERRORS)
        raise HttpResponseError(response=response)
    return response


def download(client: CallAutomationClient, url: str, settings: Settings,
             byte_range: ByteRange | None = None) -> HttpResponse:
    """Open ``url``'s content (or ``byte_range`` of it), streaming: 200, or 206 for a range ACS served.

    Raises RangeNotSatisfiable (416), CommandNotFound ``recording_file_gone`` (ACS no longer has it), RateLimited,
    AcsError; the caller closes the response.
    """
    check_location(url, settings)
    try:
        with acs_errors():
            return _open(client, url, settings, byte_range)
    except AcsError as exc:
        if exc.status == 404:
            raise CommandNotFound("ACS no longer has this file: it keeps recordings for 24 to 48 hours, or it was "
                                  "deleted elsewhere.", code="recording_file_gone") from None
        raise


def _open(client: CallAutomationClient, url: str, settings: Settings, byte_range: ByteRange | None) -> HttpResponse:
    headers = {"Accept-Encoding": "identity"}  # the bytes as stored: a range counts those
    try:
        if settings.uses_real_acs:
            kwargs = byte_range.sdk_kwargs() if byte_range else {}
            headers |= kwargs.pop("headers", {})
            stream = client.download_recording(url, headers=headers, **kwargs)
            return stream  # type: ignore[return-value]  # an HttpResponse, typed as bytes (SDK issue #42835)
        if byte_range:
            headers["Range"] = byte_range.header
        request = HttpRequest("GET", url, headers={"Accept": "application/json", "x-ms-host": _host(settings),
                                                   **headers})
        return _sent(client, request, (200, 206), stream=True)
    except HttpResponseError as exc:
        if exc.status_code == 416:
            raise RangeNotSatisfiable(getattr(exc.response, "headers", {}).get("Content-Range")) from None
        raise


def delete(client: CallAutomationClient, url: str, settings: Settings) -> bool:
    """Delete the file at its ``deleteLocation``; False when ACS no longer had it (deleted or expired)."""
    check_location(url, settings)
    try:
        with acs_errors():
            if settings.uses_real_acs:
                client.delete_recording(url)
            else:
                request = HttpRequest("DELETE", url, headers={"Accept": "application/json",
                                                              "x-ms-host": _host(settings)})
                _sent(client, request, (200,), stream=False)
    except AcsError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def metadata(client: CallAutomationClient, url: str, settings: Settings) -> Any:
    """The JSON document at a chunk's ``metadataLocation``."""
    response = download(client, url, settings)
    try:
        body = response.read()
    finally:
        response.close()
    if len(body) > MAX_METADATA_BYTES:
        raise AcsError(f"ACS's metadata document is larger than {MAX_METADATA_BYTES} bytes.")
    try:
        return json.loads(body)
    except ValueError:
        raise AcsError("ACS's metadata document is not JSON.") from None

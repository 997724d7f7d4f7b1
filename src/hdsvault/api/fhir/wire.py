"""The FHIR HTTP wire: media types, ``_format``/Accept, ``Prefer``, bodies with a size cap.

Why a module: every endpoint needs the same answers to "may I answer in this format?",
"what did the client prefer?", "is this body acceptable?" and the same headers on the way
out (``ETag: W/"v"``, ``Last-Modified``, ``Location``), so they are decided here once.
Only JSON is spoken: XML asked for in ``_format``/``Accept`` is 406, sent as a body 415.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from hdsvault.records import jsonio
from hdsvault.records.errors import Problem, RecordError
from hdsvault.records.model import Stored, utc

FHIR_JSON = "application/fhir+json; fhirVersion=4.0"
_JSON_FORMATS = {
    "json",
    "application/json",
    "application/fhir+json",
    "application/json+fhir",
}
_XML_FORMATS = {
    "xml",
    "text/xml",
    "application/xml",
    "application/fhir+xml",
    "application/xml+fhir",
}
_BODY_TYPES = {"application/json", "application/fhir+json", "application/json+fhir"}
PATCH_TYPE = "application/json-patch+json"
FORM_TYPE = "application/x-www-form-urlencoded"


class NotAcceptable(RecordError):
    """An answer format we do not speak (406)."""


class UnsupportedMedia(RecordError):
    """A request body type we do not read (415)."""


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def check_format(request: Request) -> None:
    """``_format`` and ``Accept`` must allow JSON (XML-only asks get 406)."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        media = _media(fmt)
        if media not in _JSON_FORMATS:
            raise NotAcceptable(
                Problem.NOT_SUPPORTED,
                f"_format {fmt[:40]!r} is not supported: this server speaks JSON only "
                "(json, application/fhir+json)",
            )
    accept = request.headers.get("accept")
    if accept:
        kinds = [_media(a) for a in accept.split(",") if a.strip()]
        if kinds and all(k in _XML_FORMATS for k in kinds):
            raise NotAcceptable(
                Problem.NOT_SUPPORTED, "Accept asks for XML only: this server speaks JSON only"
            )


def body_kind(request: Request, allowed: set[str] | None = None) -> str:
    """The request body's media type; 415 for XML or anything not allowed."""
    media = _media(request.headers.get("content-type", "")) or "application/fhir+json"
    ok = allowed if allowed is not None else _BODY_TYPES
    if media not in ok:
        raise UnsupportedMedia(
            Problem.NOT_SUPPORTED,
            f"Content-Type {media[:60]!r} is not supported here (expected {', '.join(sorted(ok))})",
        )
    return media


class BodyTooLarge(RecordError):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) past ``limit`` bytes without buffering more."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(
            Problem.TOO_LARGE,
            f"body of {declared} bytes exceeds the limit of {limit} (server.max_body_bytes)",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(
                Problem.TOO_LARGE,
                f"body exceeds the limit of {limit} bytes (server.max_body_bytes)",
            )
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class Prefer:
    """The ``Prefer`` header: ``return=`` and ``handling=``."""

    return_: str = "representation"
    strict: bool = False

    @classmethod
    def of(cls, request: Request) -> Prefer:
        ret, strict = "representation", False
        for part in request.headers.get("prefer", "").replace(";", ",").split(","):
            name, _, value = part.strip().partition("=")
            value = value.strip().strip('"')
            if name.strip().lower() == "return" and value in (
                "minimal",
                "representation",
                "OperationOutcome",
            ):
                ret = value
            elif name.strip().lower() == "handling":
                strict = value == "strict"
        return cls(ret, strict)


def etag(version: int) -> str:
    return f'W/"{version}"'


def http_date(t: datetime) -> str:
    return format_datetime(utc(t), usegmt=True)


def fhir_response(
    body: Any | None, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A FHIR JSON response (``body`` None gives an empty one)."""
    content = b"" if body is None else jsonio.dumps(body)
    return Response(content, status_code=status, headers=headers, media_type=FHIR_JSON)


def version_headers(
    stored: Stored, base: str | None = None, location: bool = False
) -> dict[str, str]:
    h = {"ETag": etag(stored.version), "Last-Modified": http_date(stored.last_updated)}
    if location and base is not None:
        h["Location"] = f"{base}/{stored.type}/{stored.id}/_history/{stored.version}"
    return h


def base_url(request: Request, finess: str) -> str:
    """This tenant's FHIR base, absolute (``http://host/fhir/750712184``)."""
    root = str(request.scope.get("root_path") or "").rstrip("/")  # "/fhir" when mounted
    origin = f"{request.url.scheme}://{request.url.netloc}"
    return f"{origin}{root}/{finess}"

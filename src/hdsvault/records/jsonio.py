"""JSON in and out of the store: fast (orjson), strict, and with errors that say where.

Why strict: a body that is not a JSON object, or that holds duplicate-free garbage such as
``NaN``, must be refused with a clear OperationOutcome before anything is parsed further
(invariant 7). Numbers are read as Python ``int``/``float``: FHIR decimals keep their value
but not trailing zeros (``1.50`` is stored as ``1.5``), a documented limit.
"""

from __future__ import annotations

from typing import Any

import orjson

from hdsvault.records.errors import Problem, RecordError


def parse_object(data: bytes | str, what: str = "body") -> dict[str, Any]:
    """Parse a JSON object, or raise INVALID naming the position of the error."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordError(Problem.INVALID, f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RecordError(Problem.INVALID, f"{what} must be a JSON object")
    return value


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (the form sealed in the store and sent on the wire)."""
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)

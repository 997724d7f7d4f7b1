"""Structured JSON logs (structlog), one line per event, with the request id bound.

What is logged is chosen to carry no health data and no secrets: requests are logged by method,
route template and status (never query strings, bodies or tokens). Standard-library loggers
(uvicorn, alembic) go through the same JSON renderer, so every line on stderr is JSON.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", *, json_output: bool = True) -> None:
    """Configure structlog and the standard library's loggers once per process."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # uvicorn's access log would print query strings: ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # pynetdicom logs every association and DIMSE message at INFO (a line per C-STORE); the
    # journal and hdsvault's own events say what happened. Shown at level "debug".
    shown = logging.INFO if numeric <= logging.DEBUG else max(numeric, logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(shown)

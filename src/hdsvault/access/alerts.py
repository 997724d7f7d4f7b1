"""Alerts for people who must react now (the DPO on a break-the-glass): log line + webhook.

An alert carries no clinical content: who, which establishment, which patient reference (a
server id), which grant and until when. The declared reason stays sealed in the journal.

The webhook is POSTed from a background thread with a bounded queue, so that raising an alert
never delays the clinician who broke the glass; failures are retried a few times with back-off
and then logged (the journal entry, at severity ``alert``, remains the durable record and is
also exported to the SIEM). With a secret configured, the body is signed:
``X-Hdsvault-Signature: sha256=<hex HMAC-SHA256(secret, body)>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx
import structlog

log = structlog.get_logger("hdsvault.alerts")


@dataclass(frozen=True)
class Alert:
    """Something a person must look at: kind (e.g. ``break-glass``), where, and plain details."""

    kind: str
    severity: str
    tenant: str | None
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    time: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {"type": "hdsvault-alert", "version": 1, **asdict(self)},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()


class AlertSink(Protocol):
    """Where alerts go. ``emit`` must not block on the network."""

    def emit(self, alert: Alert) -> None: ...

    def close(self) -> None: ...


class LogAlertSink:
    """Every alert as a structured log line (collected with the other logs)."""

    def emit(self, alert: Alert) -> None:
        log.warning(
            "alert", kind=alert.kind, tenant=alert.tenant, summary=alert.summary, **alert.details
        )

    def close(self) -> None:
        return None


class WebhookAlertSink:
    """POSTs each alert as JSON to a URL, from a background thread (bounded queue, retries)."""

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None = None,
        timeout: float = 5.0,
        attempts: int = 4,
        queue_size: int = 1000,
    ) -> None:
        self.url = url
        self._secret = secret
        self._attempts = attempts
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)
        self._client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=False)
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def emit(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.error("alert.webhook_queue_full", kind=alert.kind, tenant=alert.tenant)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout=timeout)
        self._client.close()

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            self._deliver(alert)

    def _deliver(self, alert: Alert) -> None:
        body = alert.to_json()
        headers = {"content-type": "application/json", "user-agent": "hdsvault-alerts/1"}
        if self._secret:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers["x-hdsvault-signature"] = f"sha256={digest}"
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._client.post(self.url, content=body, headers=headers)
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if attempt < self._attempts:
                time.sleep(delay)
                delay *= 2
        log.error("alert.webhook_failed", kind=alert.kind, tenant=alert.tenant, problem=problem)


class AlertSinks:
    """Several sinks as one."""

    def __init__(self, *sinks: AlertSink) -> None:
        self.sinks = sinks

    def emit(self, alert: Alert) -> None:
        for sink in self.sinks:
            try:
                sink.emit(alert)
            except Exception as exc:  # an alert sink never breaks the request
                log.error("alert.sink_failed", sink=type(sink).__name__, error=str(exc)[:200])

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

"""Alerts to people: the log (default), a Slack-compatible webhook, and email over SMTP.

One ``Alert`` is rendered for each channel here and nowhere else. Delivery over the network is
retried (webhook: on connection errors, HTTP 429 and 5xx), then reported as
``AlertDeliveryFailed`` naming the channel and the target without its secret parts, so a caller
can keep the alert pending instead of dropping it. The webhook URL (a Slack URL is a
credential) and the SMTP password come from env vars through ``EnvVar`` and are never printed.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from mlops_assets.lib.env_settings import env_field

CHANNELS = ("log", "webhook", "email")
LOGGER = logging.getLogger("mlops_assets.alerts")


class AlertDeliveryFailed(RuntimeError):
    """A channel could not deliver an alert after its retries."""

    def __init__(self, channel: str, message: str):
        super().__init__(f"alert channel '{channel}': {message}")
        self.channel = channel


@dataclass(frozen=True)
class Alert:
    """What a person needs to act: what failed, how badly, why, and where to look."""

    title: str
    severity: str  # ERROR or WARN
    message: str
    run_url: str = ""
    asset: str = ""
    check: str = ""
    partition: str = ""
    job: str = ""
    run_id: str = ""
    facts: dict[str, str] = field(default_factory=dict)

    def fields(self) -> list[tuple[str, str]]:
        named = [
            ("Asset", self.asset),
            ("Check", self.check),
            ("Severity", self.severity),
            ("Partition", self.partition),
            ("Job", self.job),
            ("Run", self.run_id),
        ]
        return [(k, v) for k, v in [*named, *self.facts.items()] if v]

    def text(self) -> str:
        """Plain text: the log line, the email body, the webhook's fallback text."""
        lines = [f"[{self.severity}] {self.title}"]
        lines += [f"{name}: {value}" for name, value in self.fields()]
        lines.append(f"Message: {self.message}")
        if self.run_url:
            lines.append(f"Run in Dagster: {self.run_url}")
        return "\n".join(lines)


def slack_payload(alert: Alert) -> dict[str, object]:
    """Slack incoming-webhook JSON: ``text`` for notifications, ``blocks`` for the message."""
    icon = ":red_circle:" if alert.severity == "ERROR" else ":warning:"
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{value}"}
                for name, value in alert.fields()[:10]
            ],
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {alert.message[:2900]}"}},
    ]
    if alert.run_url:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"<{alert.run_url}|Open the run in Dagster>"}
                ],
            }
        )
    return {"text": f"[{alert.severity}] {alert.title}: {alert.message[:300]}", "blocks": blocks}


def email_message(alert: Alert, sender: str, recipients: list[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[mlops {alert.severity}] {alert.title}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(alert.text())
    return message


def _redacted_url(url: str) -> str:
    """Scheme and host only: webhook paths and queries carry tokens."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/***"


class NotifierResource(ConfigurableResource):
    """Sends alerts to the configured channels."""

    channels: str = env_field(
        "MLOPS_ALERT_CHANNELS",
        "log",
        "Where alerts go, comma-separated: log, webhook, email.",
    )
    webhook_url: str = env_field(
        "MLOPS_ALERT_WEBHOOK_URL",
        "",
        "Slack-compatible incoming webhook (a secret: read through EnvVar, never shown).",
        secret=True,
    )
    smtp_host: str = env_field(
        "MLOPS_SMTP_HOST",
        "",
        "SMTP server for email alerts.",
    )
    smtp_port: int = env_field(
        "MLOPS_SMTP_PORT",
        587,
        "SMTP port.",
    )
    smtp_starttls: bool = env_field(
        "MLOPS_SMTP_STARTTLS",
        True,
        "true: upgrade the SMTP connection with STARTTLS.",
    )
    smtp_username: str = env_field(
        "MLOPS_SMTP_USERNAME",
        "",
        "SMTP login; empty means no login.",
    )
    smtp_password: str = env_field(
        "MLOPS_SMTP_PASSWORD",
        "",
        "SMTP password (a secret: read through EnvVar, never shown).",
        secret=True,
    )
    email_from: str = env_field(
        "MLOPS_ALERT_EMAIL_FROM",
        "mlops-assets@localhost",
        "Sender of alert emails.",
    )
    email_to: str = env_field(
        "MLOPS_ALERT_EMAIL_TO",
        "",
        "Alert recipients, comma-separated.",
    )
    ui_base_url: str = env_field(
        "MLOPS_DAGSTER_UI_URL",
        "http://127.0.0.1:3000",
        "Base URL of the Dagster UI, for the run links in alerts.",
    )
    attempts: int = Field(default=4, description="tries per alert and network channel")
    backoff_seconds: float = Field(default=1.0, description="first retry delay; doubles")
    timeout_seconds: float = 10.0

    def secrets_needed(self) -> set[str]:
        """The secret fields the configured channels use: wired as EnvVar, so a missing
        variable fails loudly where it is needed instead of sending nothing."""
        names = {c.strip().lower() for c in self.channels.split(",")}
        needed = set()
        if "webhook" in names:
            needed.add("webhook_url")
        if "email" in names and self.smtp_username:
            needed.add("smtp_password")
        return needed

    def channel_list(self) -> list[str]:
        names = [c.strip().lower() for c in self.channels.split(",") if c.strip()]
        unknown = sorted(set(names) - set(CHANNELS))
        if unknown:
            raise ValueError(
                f"unknown alert channel(s) {', '.join(unknown)} in MLOPS_ALERT_CHANNELS; "
                f"known: {', '.join(CHANNELS)}"
            )
        if "webhook" in names and not self.webhook_url:
            raise ValueError("alert channel 'webhook' needs MLOPS_ALERT_WEBHOOK_URL")
        if "email" in names and not (self.smtp_host and self.email_to):
            raise ValueError("alert channel 'email' needs MLOPS_SMTP_HOST and MLOPS_ALERT_EMAIL_TO")
        return names or ["log"]

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_base_url.rstrip('/')}/runs/{run_id}" if run_id else ""

    def send(
        self, alert: Alert, channels: list[str] | None = None, log: Any = None
    ) -> list[AlertDeliveryFailed]:
        """Deliver to each channel (all configured ones by default); return the failures.

        ``log``: where the log channel writes (a sensor's ``context.log``, so the alert shows in
        the tick's logs in the UI); the module logger by default.
        """
        failures = []
        for channel in channels if channels is not None else self.channel_list():
            try:
                self.deliver(alert, channel, log)
            except AlertDeliveryFailed as exc:
                LOGGER.error("%s; the alert was: %s", exc, alert.text())
                failures.append(exc)
        return failures

    def deliver(self, alert: Alert, channel: str, log: Any = None) -> None:
        if channel == "log":
            logger = log or LOGGER
            write = logger.error if alert.severity == "ERROR" else logger.warning
            write(f"ALERT {alert.text()}")
        elif channel == "webhook":
            self._post_webhook(slack_payload(alert))
        elif channel == "email":
            self._send_email(alert)
        else:
            raise AlertDeliveryFailed(channel, "unknown channel")

    def _retrying(self, channel: str, target: str, attempt_once: Callable[[], None]) -> None:
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                attempt_once()
                return
            except _Permanent as exc:
                raise AlertDeliveryFailed(channel, f"{target} refused the alert: {exc}") from None
            except _Transient as exc:
                last = str(exc)
                if attempt < self.attempts:
                    delay = min(exc.retry_after, 60.0) or self.backoff_seconds * 2 ** (attempt - 1)
                    LOGGER.warning(
                        "alert channel '%s': %s (attempt %d of %d); retrying in %.1f s",
                        channel,
                        last,
                        attempt,
                        self.attempts,
                        delay,
                    )
                    time.sleep(delay)
        raise AlertDeliveryFailed(
            channel, f"{target} failed {self.attempts} times, last: {last}"
        ) from None

    def _post_webhook(self, payload: dict[str, object]) -> None:
        target = _redacted_url(self.webhook_url)
        body = json.dumps(payload).encode()

        def post() -> None:
            request = urllib.request.Request(
                self.webhook_url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "mlops-assets"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read(200).decode(errors="replace").strip()
                text = f"HTTP {exc.code} {exc.reason}" + (f" ({detail})" if detail else "")
                if exc.code == 429 or exc.code >= 500:
                    retry_after = exc.headers.get("Retry-After", "")
                    raise _Transient(
                        text, float(retry_after) if retry_after.isdigit() else 0.0
                    ) from None
                raise _Permanent(text) from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise _Transient(f"POST {target}: {reason}") from None

        self._retrying("webhook", target, post)

    def _send_email(self, alert: Alert) -> None:
        recipients = [r.strip() for r in self.email_to.split(",") if r.strip()]
        target = f"smtp://{self.smtp_host}:{self.smtp_port}"
        message = email_message(alert, self.email_from, recipients)

        def send() -> None:
            try:
                with smtplib.SMTP(
                    self.smtp_host, self.smtp_port, timeout=self.timeout_seconds
                ) as smtp:
                    if self.smtp_starttls:
                        smtp.starttls(context=ssl.create_default_context())
                    if self.smtp_username:
                        smtp.login(self.smtp_username, self.smtp_password)
                    smtp.send_message(message)
            except smtplib.SMTPAuthenticationError as exc:
                raise _Permanent(
                    f"authentication as '{self.smtp_username}' failed ({exc.smtp_code})"
                ) from None
            except smtplib.SMTPRecipientsRefused as exc:
                raise _Permanent(f"recipients refused: {', '.join(exc.recipients)}") from None
            except smtplib.SMTPNotSupportedError as exc:
                raise _Permanent(
                    f"{exc} (set MLOPS_SMTP_STARTTLS=false for a server without TLS)"
                ) from None
            except smtplib.SMTPResponseException as exc:
                error = exc.smtp_error
                detail = error.decode(errors="replace") if isinstance(error, bytes) else error
                text = f"SMTP {exc.smtp_code} {detail}"
                if 400 <= exc.smtp_code < 500:
                    raise _Transient(text) from None
                raise _Permanent(text) from None
            except (smtplib.SMTPException, OSError) as exc:
                raise _Transient(f"{target}: {exc}") from None

        self._retrying("email", target, send)


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class _Permanent(Exception):
    pass

"""The notifier against a real HTTP receiver and a real SMTP server on loopback."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from mlops_assets.resources.notifier import Alert, NotifierResource
from mlops_assets_tests.receivers import WebhookReceiver

ALERT = Alert(
    title="Check drift_share_below_threshold failed on drift_report",
    severity="WARN",
    message="4 drifted columns, share 33% (threshold 30%)",
    run_url="http://dagster.example:3000/runs/abc123",
    asset="drift_report",
    check="drift_share_below_threshold",
    partition="2026-11-20",
    run_id="abc123",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def notifier(**config: Any) -> NotifierResource:
    return NotifierResource(**{"backoff_seconds": 0.05, **config})


def test_webhook_payload_is_slack_compatible_and_names_everything() -> None:
    with WebhookReceiver() as receiver:
        failures = notifier(channels="webhook", webhook_url=receiver.url).send(ALERT)
        assert failures == []
        [payload] = receiver.delivered()
        request = receiver.requests[0]
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["path"] == "/services/T000/B000/secret-token"
    assert set(payload) == {"text", "blocks"}
    for part in ("WARN", "drift_report", "4 drifted columns"):
        assert part in payload["text"]
    header, fields, message, context = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": ALERT.title}}
    field_text = [f["text"] for f in fields["fields"]]
    assert "*Asset*\ndrift_report" in field_text
    assert "*Check*\ndrift_share_below_threshold" in field_text
    assert "*Severity*\nWARN" in field_text
    assert "*Partition*\n2026-11-20" in field_text
    assert message["text"]["type"] == "mrkdwn"
    assert ALERT.message in message["text"]["text"]
    assert context["elements"][0]["text"] == f"<{ALERT.run_url}|Open the run in Dagster>"


def test_webhook_server_errors_are_retried_until_delivered() -> None:
    with WebhookReceiver(statuses=[503, 500]) as receiver:
        failures = notifier(channels="webhook", webhook_url=receiver.url).send(ALERT)
        statuses = [r["status"] for r in receiver.requests]
        delivered = receiver.delivered()
    assert failures == []
    assert statuses == [503, 500, 200]
    assert len(delivered) == 1


def test_a_webhook_that_keeps_failing_is_reported_without_its_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with WebhookReceiver(statuses=[502] * 10) as receiver:
        with caplog.at_level(logging.WARNING, logger="mlops_assets.alerts"):
            failures = notifier(channels="webhook", webhook_url=receiver.url, attempts=3).send(
                ALERT
            )
        tried = len(receiver.requests)
    assert tried == 3
    [failure] = failures
    assert failure.channel == "webhook"
    assert "failed 3 times" in str(failure)
    assert "HTTP 502" in str(failure)
    assert "secret-token" not in str(failure)
    assert "secret-token" not in caplog.text
    # The undelivered alert is in the log, so it is never silently lost.
    assert ALERT.message in caplog.text


def test_a_webhook_client_error_is_not_retried() -> None:
    with WebhookReceiver(statuses=[404]) as receiver:
        failures = notifier(channels="webhook", webhook_url=receiver.url).send(ALERT)
        tried = len(receiver.requests)
    assert tried == 1
    assert "refused the alert: HTTP 404" in str(failures[0])


def test_an_unreachable_webhook_is_retried_then_reported() -> None:
    failures = notifier(
        channels="webhook", webhook_url=f"http://127.0.0.1:{free_port()}/hook", attempts=2
    ).send(ALERT)
    assert "failed 2 times" in str(failures[0])
    assert "Connection refused" in str(failures[0])


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message
    from aiosmtpd.smtp import AuthResult, LoginPassword

    class Inbox(Message):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[Any] = []

        def handle_message(self, message: Any) -> None:
            self.messages.append(message)

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
        ok = isinstance(auth, LoginPassword) and (auth.login, auth.password) == (
            b"alerts",
            b"s3cret",
        )
        return AuthResult(success=ok, handled=False)

    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def mailer(controller: Any, **config: Any) -> NotifierResource:
    """The email channel pointed at the test's SMTP server (plain SMTP on loopback)."""
    return notifier(
        channels="email",
        smtp_host="127.0.0.1",
        smtp_port=controller.port,
        smtp_starttls=False,
        **config,
    )


def test_email_reaches_a_real_smtp_server(smtp_server: Any) -> None:
    controller, inbox = smtp_server
    failures = mailer(
        controller,
        smtp_username="alerts",
        smtp_password="s3cret",
        email_from="dagster@example.com",
        email_to="ml-team@example.com, oncall@example.com",
    ).send(ALERT)
    assert failures == []
    [message] = inbox.messages
    assert message["Subject"] == f"[mlops WARN] {ALERT.title}"
    assert message["To"] == "ml-team@example.com, oncall@example.com"
    body = message.get_payload(decode=True).decode()
    assert "Check: drift_share_below_threshold" in body
    assert "Run in Dagster: http://dagster.example:3000/runs/abc123" in body


def test_email_with_a_wrong_password_fails_at_once(smtp_server: Any) -> None:
    controller, inbox = smtp_server
    failures = mailer(
        controller, smtp_username="alerts", smtp_password="wrong", email_to="ml-team@example.com"
    ).send(ALERT)
    assert "authentication as 'alerts' failed (535)" in str(failures[0])
    assert "wrong" not in str(failures[0])
    assert inbox.messages == []


def test_every_channel_is_tried_even_when_one_fails(
    smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    controller, inbox = smtp_server
    with WebhookReceiver(statuses=[500] * 5) as receiver, caplog.at_level(logging.WARNING):
        failures = notifier(
            channels="log,webhook,email",
            webhook_url=receiver.url,
            attempts=2,
            smtp_host="127.0.0.1",
            smtp_port=controller.port,
            smtp_starttls=False,
            email_to="ml-team@example.com",
        ).send(ALERT)
    assert [f.channel for f in failures] == ["webhook"]
    assert len(inbox.messages) == 1
    assert "ALERT [WARN] Check drift_share_below_threshold failed" in caplog.text


def test_misconfigured_channels_are_named() -> None:
    with pytest.raises(ValueError, match="unknown alert channel\\(s\\) pager"):
        notifier(channels="log,pager").channel_list()
    with pytest.raises(ValueError, match="needs MLOPS_ALERT_WEBHOOK_URL"):
        notifier(channels="webhook").channel_list()
    with pytest.raises(ValueError, match="needs MLOPS_SMTP_HOST and MLOPS_ALERT_EMAIL_TO"):
        notifier(channels="email", smtp_host="mail").channel_list()


def test_email_body_is_the_alert_text() -> None:
    from mlops_assets.resources.notifier import email_message

    message = email_message(ALERT, "a@example.com", ["b@example.com"])
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed.get_content().strip() == ALERT.text()

"""Alert delivery end to end: the store's alerts reach a local fake webhook (Slack/Discord style) and a local
aiosmtpd server that requires STARTTLS and a login; routing by level, duplicate suppression, retries with
back-off, giving up, timeouts that return quickly, and no secret in any delivery row, error or log line."""
from __future__ import annotations

import email
import email.policy
import logging
import socket
import ssl
import subprocess
import time
from functools import partial

import pandas as pd
import pytest

from traderbot.alerts import DeliveryReport, deliver_pending, deliver_safely, send_email
from traderbot.config import AlertSettings, Secrets, Settings, load_settings
from traderbot.fakes.webhook import FakeWebhook
from traderbot.store.deliveries import alert_deliveries_frame
from traderbot.store.ledger import ensure_account, record_alert
from traderbot.store.schema import now_utc

TOKEN = "T0AB/B0CD/s3cret-hook-token"
PASSWORD = "sm7p-pa55w0rd-xyz"
CRIT = ("critical", "storage", "a ledger write failed: disk full", {"free_bytes": 0})


@pytest.fixture
def account(engine):
    return ensure_account(engine, "default", "paper", 100_000)


@pytest.fixture
def hook():
    with FakeWebhook("slack", token=TOKEN, hang_s=5) as h: yield h


def settings(tmp_path, url=None, **alerts) -> Settings:
    alerts = {"timeout_s": 2, "retry_after_s": 60, "max_attempts": 4, **alerts}
    return Settings(root=tmp_path, alerts=AlertSettings(**alerts), secrets=Secrets(alert_webhook_url=url))


def rows(engine):
    return alert_deliveries_frame(engine, 100).sort_values("id").reset_index(drop=True)


def sec(t0, s): return t0 + pd.Timedelta(seconds=s)


@pytest.mark.parametrize("style, key, status", [("slack", "text", "200"), ("discord", "content", "204")])
def test_webhook_json_reaches_receiver(engine, account, tmp_path, style, key, status):
    with FakeWebhook(style, token="42/tok-abc") as h:
        record_alert(engine, *CRIT, account_id=account, run_id="daily-2024-01-02")
        assert deliver_pending(engine, settings(tmp_path, h.url)) == DeliveryReport(sent=1)
        assert len(h.received) == 1
        body = h.received[0]
        assert body[key] == "[CRITICAL] traderbot storage: a ledger write failed: disk full (account default, run daily-2024-01-02)"
        assert body["text"] == body["content"]
    r = rows(engine).iloc[0]
    assert (r.channel, r.status, r.attempts, r.last_error) == ("webhook", "sent", 1, None)
    assert r.delivered_at is not None


def test_routing_by_level(engine, account, tmp_path, hook):
    mails = []
    cfg = settings(tmp_path, hook.url, webhook_levels=("warning", "critical"), email_levels=("critical",),
                   email_to=("ops@example.com",), smtp_host="127.0.0.1")
    for level in ("info", "warning", "critical"): record_alert(engine, level, "src", f"a {level} alert", {}, account)
    report = deliver_pending(engine, cfg, send_email=lambda s, pw, alert: mails.append(alert.level))
    assert report == DeliveryReport(sent=3)
    assert [b["text"].split("]")[0] for b in hook.received] == ["[WARNING", "[CRITICAL"]
    assert mails == ["critical"]
    got = rows(engine)
    assert sorted(zip(got.level, got.channel)) == [("critical", "email"), ("critical", "webhook"), ("warning", "webhook")]
    assert deliver_pending(engine, cfg, send_email=lambda *a: mails.append("again")) == DeliveryReport()   # each routed once


def test_no_channel_configured_sends_nothing(engine, account, tmp_path):
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, settings(tmp_path)) == DeliveryReport()
    assert rows(engine).empty


def test_duplicates_suppressed_within_window_sent_after(engine, account, tmp_path, hook):
    cfg, t0 = settings(tmp_path, hook.url, dedupe_window_s=3600), now_utc()
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, cfg, t0) == DeliveryReport(sent=1)
    record_alert(engine, *CRIT, account_id=account)
    record_alert(engine, *CRIT, account_id=account)
    record_alert(engine, "critical", "storage", "another message", {}, account)   # a different key is not a repeat
    assert deliver_pending(engine, cfg, sec(t0, 600)) == DeliveryReport(sent=1, suppressed=2)
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, cfg, sec(t0, 3601)) == DeliveryReport(sent=1)
    assert [b["text"].split(": ", 1)[1] for b in hook.received] == ["a ledger write failed: disk full (account default)",
                                                                   "another message (account default)",
                                                                   "a ledger write failed: disk full (account default)"]
    assert list(rows(engine).status) == ["sent", "suppressed", "suppressed", "sent", "sent"]


def test_repeats_in_one_pass_send_once(engine, account, tmp_path, hook):
    for _ in range(5): record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, settings(tmp_path, hook.url)) == DeliveryReport(sent=1, suppressed=4)
    assert len(hook.received) == 1


def test_failing_twice_then_sent_with_backoff(engine, account, tmp_path, hook):
    cfg, t0 = settings(tmp_path, hook.url, retry_after_s=60), now_utc()
    hook.fail(500, times=2)
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, cfg, t0) == DeliveryReport(failed=1, pending=1)
    r = rows(engine).iloc[0]
    assert (r.status, r.attempts, r.next_attempt_at) == ("failed", 1, sec(t0, 60))
    assert r.last_error.startswith("webhook http://127.0.0.1:") and "HTTP 500" in r.last_error
    assert deliver_pending(engine, cfg, sec(t0, 59)) == DeliveryReport(pending=1)   # not due: not tried
    assert hook.requests == 1
    assert deliver_pending(engine, cfg, sec(t0, 60)) == DeliveryReport(failed=1, pending=1)
    assert rows(engine).iloc[0].next_attempt_at == sec(t0, 60 + 120)                # doubled
    assert deliver_pending(engine, cfg, sec(t0, 180)) == DeliveryReport(sent=1)
    r = rows(engine).iloc[0]
    assert (r.status, r.attempts, r.next_attempt_at, r.delivered_at) == ("sent", 3, None, sec(t0, 180))
    assert len(hook.received) == 1 and hook.requests == 3


def test_rate_limited_is_retried(engine, account, tmp_path, hook):
    cfg, t0 = settings(tmp_path, hook.url), now_utc()
    hook.fail(429)
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, cfg, t0) == DeliveryReport(failed=1, pending=1)
    assert "HTTP 429" in rows(engine).last_error.iloc[0]
    assert deliver_pending(engine, cfg, sec(t0, 60)) == DeliveryReport(sent=1)


def test_hang_times_out_quickly_and_defers_the_rest(engine, account, tmp_path, hook):
    cfg, t0 = settings(tmp_path, hook.url, timeout_s=0.3), now_utc()
    hook.hang(times=10)
    for i in range(3): record_alert(engine, "critical", "storage", f"failure {i}", {}, account)
    start = time.monotonic()
    report = deliver_pending(engine, cfg, t0)
    assert time.monotonic() - start < 2.0                  # one timeout, not one per alert
    assert report == DeliveryReport(failed=1, pending=3)
    got = rows(engine)
    assert list(got.status) == ["failed", "pending", "pending"]
    assert got.last_error.iloc[0].endswith("no answer within 0.3s")
    assert hook.requests == 1


def test_gives_up_after_max_attempts(engine, account, tmp_path, hook):
    cfg, t0 = settings(tmp_path, hook.url, max_attempts=2, retry_after_s=10), now_utc()
    hook.fail(500, times=10)
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, cfg, t0) == DeliveryReport(failed=1, pending=1)
    assert deliver_pending(engine, cfg, sec(t0, 10)) == DeliveryReport(failed=1, gave_up=1)
    r = rows(engine).iloc[0]
    assert (r.status, r.attempts, r.next_attempt_at) == ("failed", 2, None)
    assert deliver_pending(engine, cfg, sec(t0, 100_000)) == DeliveryReport()
    assert hook.requests == 2
    record_alert(engine, *CRIT, account_id=account)     # a given-up delivery does not suppress the next occurrence
    assert deliver_pending(engine, cfg, sec(t0, 20)).failed == 1


def test_refused_request_gives_up_at_once(engine, account, tmp_path, hook):
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, settings(tmp_path, hook.url.replace("s3cret-hook-token", "revoked"))) == DeliveryReport(failed=1, gave_up=1)
    assert "HTTP 404 no_service" in rows(engine).last_error.iloc[0]


def test_old_alerts_are_not_routed(engine, account, tmp_path, hook):
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, settings(tmp_path, hook.url), sec(now_utc(), 2 * 86400)) == DeliveryReport()
    assert rows(engine).empty and hook.requests == 0


def test_delivery_errors_never_raise(engine, account, tmp_path, hook):
    def bug(url, payload, timeout_s): raise KeyError("oops")
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, settings(tmp_path, hook.url), send_webhook=bug) == DeliveryReport(failed=1, pending=1)
    assert rows(engine).last_error.iloc[0] == "KeyError: 'oops'"


def test_deliver_safely_survives_a_broken_store(tmp_path, hook, caplog):
    import sqlalchemy as sa
    caplog.set_level(logging.ERROR, logger="traderbot.alerts")
    assert deliver_safely(sa.create_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"), settings(tmp_path, hook.url)) is None
    assert "alert delivery skipped" in caplog.text and TOKEN not in caplog.text


# ---------------------------------------------------------------------------------------------------------
# Email: a local aiosmtpd server with a self-signed certificate, STARTTLS required, AUTH only over TLS
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem"),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return d / "c.pem", d / "k.pem"


class _Inbox:
    def __init__(self): self.messages, self.tls = [], []
    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        self.tls.append(session.ssl is not None)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.fixture
def smtp_server(certificate):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"traderbot" and auth_data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)
    inbox = _Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=_free_port(), tls_context=server_tls, require_starttls=True,
                     auth_require_tls=True, auth_required=True, authenticator=authenticate)
    ctl.start()
    try: yield ctl, inbox, ssl.create_default_context(cafile=str(cert))
    finally: ctl.stop()


def email_settings(tmp_path, port, password=PASSWORD, **extra):
    ini = tmp_path / "settings.ini"
    ini.write_text("[alerts]\nemail_to = ops@example.com, me@example.com\nemail_from = bot@example.com\nsmtp_host = 127.0.0.1\n"
                   f"smtp_port = {port}\nsmtp_user = traderbot\ntimeout_s = 2\nretry_after_s = 60\n"
                   + "".join(f"{k} = {v}\n" for k, v in extra.items()))
    return load_settings(ini, env={"TRADERBOT_SMTP_PASSWORD": password, "TRADERBOT_ALERT_WEBHOOK_URL": ""})


def test_email_over_starttls_with_login(engine, account, tmp_path, smtp_server):
    ctl, inbox, trust = smtp_server
    cfg = email_settings(tmp_path, ctl.port)
    record_alert(engine, "critical", "breaker:drawdown", "drawdown 12% over the 10% limit\ntrading halted", {"drawdown": 0.12},
                 account, "daily-2024-01-02")
    record_alert(engine, "warning", "limit:VAR", "not for email", {}, account)
    assert deliver_pending(engine, cfg, send_email=partial(send_email, context=trust)) == DeliveryReport(sent=1)
    assert len(inbox.messages) == 1 and inbox.tls == [True]
    env = inbox.messages[0]
    assert (env.mail_from, env.rcpt_tos) == ("bot@example.com", ["ops@example.com", "me@example.com"])
    msg = email.message_from_bytes(env.content, policy=email.policy.default)
    assert msg["Subject"] == "[traderbot CRITICAL] breaker:drawdown: drawdown 12% over the 10% limit"
    body = msg.get_content()
    assert "trading halted" in body and "account: default" in body and "run: daily-2024-01-02" in body and '"drawdown": 0.12' in body
    assert PASSWORD not in env.content.decode()


def test_email_wrong_password_is_recorded_without_it(engine, account, tmp_path, smtp_server, caplog):
    ctl, inbox, trust = smtp_server
    caplog.set_level(logging.WARNING, logger="traderbot.alerts")
    wrong = "wr0ng-pa55word-123"
    record_alert(engine, *CRIT, account_id=account)
    cfg = email_settings(tmp_path, ctl.port, password=wrong)
    assert deliver_pending(engine, cfg, send_email=partial(send_email, context=trust)) == DeliveryReport(failed=1, pending=1)
    err = rows(engine).last_error.iloc[0]
    assert err.startswith(f"email 127.0.0.1:{ctl.port}: SMTPAuthenticationError") and wrong not in err
    assert wrong not in caplog.text and "SMTPAuthenticationError" in caplog.text
    assert inbox.messages == []


def test_email_certificate_is_verified(engine, account, tmp_path, smtp_server):
    ctl, inbox, _ = smtp_server
    record_alert(engine, *CRIT, account_id=account)
    assert deliver_pending(engine, email_settings(tmp_path, ctl.port)) == DeliveryReport(failed=1, pending=1)   # the system's CAs: untrusted
    assert "SSLCertVerificationError" in rows(engine).last_error.iloc[0] and inbox.messages == []


def test_no_secret_in_rows_errors_or_logs(engine, account, tmp_path, hook, smtp_server, caplog):
    ctl, inbox, trust = smtp_server
    caplog.set_level(logging.DEBUG)
    ini = email_settings(tmp_path, ctl.port, password="x-wrong-x-pass")
    cfg = ini.model_copy(update={"secrets": Secrets(alert_webhook_url=hook.url, smtp_password="x-wrong-x-pass")})
    hook.fail(500).hang()
    t0 = now_utc()
    def leaky(url, payload, timeout_s): raise RuntimeError(f"could not post to {url} (token {TOKEN})")
    record_alert(engine, *CRIT, account_id=account)
    deliver_pending(engine, cfg, t0, send_email=partial(send_email, context=trust))
    deliver_pending(engine, cfg.model_copy(update={"alerts": cfg.alerts.model_copy(update={"timeout_s": 0.3})}), sec(t0, 60))
    deliver_pending(engine, cfg, sec(t0, 1000), send_webhook=leaky)
    stored = rows(engine).to_string() + " ".join(rows(engine).last_error.dropna())
    assert (rows(engine).attempts > 0).all()
    for secret in (TOKEN, "s3cret-hook-token", hook.url, "x-wrong-x-pass"):
        assert secret not in stored and secret not in caplog.text
    assert "***" in stored

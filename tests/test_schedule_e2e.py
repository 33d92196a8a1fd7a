"""End to end: `traderbot schedule --once` for one session, through the real command and papermill.

1. Your own files and the paper broker: the scheduler ingests the files into the bar lake, then the daily run trades
   the session on the lake; a frozen price in the files raises a quality alert, which reaches a fake webhook.
2. Alpaca: the same with the market data and the orders going to the fake Alpaca server (the real alpaca-py client
   over HTTP), the daily run trading through the Alpaca adapter.

Each job runs once per session: a second `--once` finds nothing due.
"""
from __future__ import annotations
import os, shutil, subprocess, sys
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from traderbot.data.sample import load_benchmark, load_closes
from traderbot.execution.manager import ledger_problems, reconcile
from traderbot.fakes.alpaca import FakeAlpaca
from traderbot.fakes.webhook import FakeWebhook
from traderbot.store import database, ledger
from traderbot.store.runs import last_job_runs

ROOT = Path(__file__).resolve().parents[1]
TRADERBOT = [str(Path(sys.executable).parent / "traderbot")]
UNIVERSE = ["AAPL", "CVX", "JNJ", "JPM", "KO", "LLY", "MRK", "PG", "WMT", "XOM"]
SESSION, NOW = "2022-12-28", "2022-12-28T22:30"     # XNYS closed at 21:00 UTC: ingest due 21:30, daily 21:45
pytestmark = pytest.mark.timeout(600)


def sample_prices() -> pd.DataFrame:
    "Closes of the universe and the index (as SPY) since 2021, XOM frozen for the last ten sessions (a stale feed)."
    px = load_closes().loc["2021-01-01":SESSION, UNIVERSE].assign(SPY=load_benchmark().loc["2021-01-01":SESSION])
    px.iloc[-10:, px.columns.get_loc("XOM")] = px["XOM"].iloc[-11]
    return px


def environment(tmp: Path, webhook_url: str, **settings) -> tuple[dict, str]:
    url = f"sqlite:///{tmp / 'traderbot.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADERBOT", "ALPACA"))}
    env.update(TRADERBOT_SETTINGS=str(ROOT / "settings.ini"), TRADERBOT__STORE__URL=url, TRADERBOT__PIPELINE__REPORTS_DIR=str(tmp / "reports"),
               TRADERBOT__MODELS__USE="false", TRADERBOT__DATA__SOURCE="lake", TRADERBOT__DATA__LAKE=str(tmp / "lake"),
               TRADERBOT__DATA__BENCHMARK="SPY", TRADERBOT__DATA__UNIVERSE=" ".join(UNIVERSE),
               TRADERBOT__DATA__SECTORS=str(ROOT / "data" / "sample" / "sectors.csv"), TRADERBOT__SCHEDULE__JOBS="ingest daily",
               TRADERBOT__INGEST__START="2021-01-04", TRADERBOT_ALERT_WEBHOOK_URL=webhook_url)
    env.update({f"TRADERBOT__{k.upper()}": str(v) for k, v in settings.items()})
    return env, url


def schedule_once(env) -> subprocess.CompletedProcess:
    return subprocess.run([*TRADERBOT, "schedule", "--once", "--now", NOW], env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)


def check_the_session(r, url: str, webhook: FakeWebhook, broker) -> None:
    "What both end-to-end runs must show: each job once, orders for the session, the quality alert at the webhook, a clean ledger."
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ingest {SESSION}: succeeded" in r.stdout and f"daily {SESSION}: succeeded" in r.stdout, r.stdout
    eng = database.connect(url)
    jobs = last_job_runs(eng)
    assert sorted(zip(jobs.job, jobs.status)) == [("daily", "succeeded"), ("ingest", "succeeded")]
    aid = ledger.account_id(eng, "default")
    if broker.name != "paper":              # Alpaca fills after the acknowledgement: the next start's reconciliation settles the fills
        assert {o.status.value for o in ledger.orders_for(eng, aid, SESSION)} <= {"accepted", "filled", "denied"}
        assert reconcile(eng, broker, aid).status == "clean"
    orders = ledger.orders_for(eng, aid, SESSION)
    assert orders and all(o.status.value in ("filled", "denied") for o in orders)
    assert "XOM" not in {o.symbol for o in orders if o.status.value == "filled"}
    texts = [b.get("text", "") for b in webhook.received]
    assert any("XOM" in t and "STALE_DATA" in t and "[WARNING]" in t for t in texts), texts
    assert ledger_problems(eng, aid, broker) == []


def test_schedule_once_with_your_files_and_the_paper_broker(tmp_path):
    px = sample_prices()
    files = tmp_path / "files"; files.mkdir()
    for s in px.columns:
        pd.DataFrame({"date": px.index.strftime("%Y-%m-%d"), "open": px[s], "high": px[s], "low": px[s], "close": px[s],
                      "volume": 5e7}).to_csv(files / f"{s}.csv", index=False)
    with FakeWebhook() as hook:
        env, url = environment(tmp_path, hook.url, ingest__provider="files", ingest__path=files)
        r = schedule_once(env)
        from traderbot.brokers.paper import PaperBroker, market_at
        venue = PaperBroker(database.connect(url), "default", market_at({}, pd.Timestamp(f"{SESSION} 21:00", tz="UTC")))
        check_the_session(r, url, hook, venue)
        again = schedule_once(env)                                          # each (job, session) runs once
        assert again.returncode == 0 and "nothing is due" in again.stdout, again.stdout + again.stderr


def test_schedule_once_against_the_fake_alpaca_data_and_trading_servers(tmp_path):
    px = sample_prices()
    bars = {s: [(d.strftime("%Y-%m-%d"), v, v, v, v, 5e7) for d, v in px[s].items()] for s in px.columns}
    prices = {s: Decimal(str(round(px[s].iloc[-1], 2))) for s in px.columns}
    with FakeAlpaca("key-e2e", "secret-e2e", prices=prices, cash=Decimal(1_000_000), bars=bars) as fake, FakeWebhook() as hook:
        env, url = environment(tmp_path, hook.url, ingest__provider="alpaca", ingest__base_url=fake.url,
                               broker__name="alpaca", broker__alpaca_url=fake.url)
        env.update(ALPACA_API_KEY="key-e2e", ALPACA_SECRET_KEY="secret-e2e")
        r = schedule_once(env)
        assert fake.count("GET /v2/stocks/bars") >= 1 and fake.count("POST /v2/orders") >= 1, fake.requests
        from traderbot.brokers.alpaca import AlpacaBroker
        broker = AlpacaBroker("key-e2e", "secret-e2e", paper=True, url_override=fake.url, timeout_s=5)
        check_the_session(r, url, hook, broker)
        sent = {o["client_order_id"] for o in fake.orders.values()}
        filled = {o.client_order_id for o in ledger.orders_for(database.connect(url), 1, SESSION) if o.status.value == "filled"}
        assert filled and filled == sent                                  # every order the ledger filled is the one Alpaca has, once

"""docs/reliability.md's catalogue cases that need a real broker adapter: F3 and L3 against the real alpaca-py client
over the local fake Alpaca server, F10 against the real ib_async `IB` object driven by FakeTWS, and S3, the live
opt-in. Each case goes through traderbot's order manager and store, and ends with the ledger check.
(Tests named after the other catalogue ids, on the paper broker, are in test_reliability.py.)
"""
from __future__ import annotations
import os, subprocess, sys, time
from decimal import Decimal
from pathlib import Path

import pytest

from traderbot.store.ledger import get_order, ensure_account, store_intents, max_broker_order_id
from traderbot.store import schema, database
from traderbot.brokers.alpaca import AlpacaBroker
from traderbot.core import ConfigError
from traderbot.config import load_settings, trading_mode
from traderbot.core import BrokerError, Order, OrderStatus
from traderbot.execution.manager import OrderManager, ledger_problems
from traderbot.fakes.alpaca import FakeAlpaca
from traderbot.risk.gate import OrderContext, RiskLimits

ROOT = Path(__file__).resolve().parents[1]
LIMITS = RiskLimits(1.0, Decimal(10**7))
CTX = OrderContext(Decimal("150"), Decimal(10**6), Decimal(0), market_open=True, cash=Decimal(10**6))
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ledger(tmp_path):
    "A store with one paper account holding the fake's cash."
    eng = database.open_store(f"sqlite:///{tmp_path}/ledger.db")
    return eng, ensure_account(eng, "acct", "paper", Decimal(100_000))


@pytest.fixture
def alpaca():
    with FakeAlpaca("key-id", "secret", prices={"AAPL": Decimal("150")}, cash=Decimal(100_000), hang_s=3.0) as fake:
        yield fake, AlpacaBroker("key-id", "secret", paper=True, url_override=fake.url, timeout_s=0.5)


def intents(eng, acct, *orders):
    store_intents(eng, acct, "test", "2022-12-28", {}, {}, list(orders), {}, "alpaca")
    return [o.client_order_id for o in orders]


def test_f3_timeout_after_accept_then_504_is_settled_by_lookup_with_one_broker_order(ledger, alpaca):
    eng, acct = ledger
    fake, broker = alpaca
    om = OrderManager(eng, broker, acct, LIMITS)
    [cid] = intents(eng, acct, Order("tb-f3-1", "AAPL", "buy", Decimal(10)))
    fake.inject("timeout_after_accept", "POST /v2/orders")
    t0 = time.monotonic()
    first, sent = om.place(cid, CTX)
    assert (first.status, sent) == (OrderStatus.UNKNOWN, True) and time.monotonic() - t0 < 2.5   # the HTTP call had a timeout
    fake.inject("http_504", "GET /v2/orders:by_client_order_id")     # the retry's lookup fails too: still unknown, nothing resent
    with pytest.raises(BrokerError):
        om.place(cid, CTX)
    assert get_order(eng, cid).status is OrderStatus.UNKNOWN
    settled, sent = om.place(cid, CTX)                                 # the next retry's lookup finds it
    assert (settled.status, settled.filled_quantity, sent) == (OrderStatus.FILLED, Decimal(10), False)
    assert fake.requests["POST /v2/orders"] == 1 and len(fake.orders) == 1
    assert ledger_problems(eng, acct, broker) == []


def test_f3_duplicate_id_422_on_a_resend_is_settled_by_lookup(ledger, alpaca):
    eng, acct = ledger
    fake, broker = alpaca
    [cid] = intents(eng, acct, Order("tb-f3-2", "AAPL", "buy", Decimal(5)))
    broker.submit(Order(cid, "AAPL", "buy", Decimal(5)))               # an earlier process sent it and lost every trace
    done, sent = OrderManager(eng, broker, acct, LIMITS).place(cid, CTX)
    assert (done.status, done.filled_quantity) == (OrderStatus.FILLED, Decimal(5))
    assert fake.requests["POST /v2/orders"] == 2 and len(fake.orders) == 1   # the second POST got 422 and created nothing
    assert ledger_problems(eng, acct, broker) == []


def test_l3_burst_during_429_is_throttled_with_a_reason_and_never_resent_blindly(ledger, alpaca):
    eng, acct = ledger
    fake, broker = alpaca
    clock = [0.0]
    om = OrderManager(eng, broker, acct, LIMITS, backoff_s=30, clock=lambda: clock[0])
    cids = intents(eng, acct, *[Order(f"tb-l3-{i}", "AAPL", "buy", Decimal(1)) for i in range(20)])
    fake.inject("http_429", "POST /v2/orders")
    results = [om.place(c, CTX)[0] for c in cids]
    assert results[0].status is OrderStatus.UNKNOWN and results[0].reason.startswith("RATE_LIMITED")
    assert all(r.status is OrderStatus.NEW and r.reason.startswith("RATE_LIMITED") for r in results[1:])
    assert fake.requests["POST /v2/orders"] == 1                       # the burst stopped at the first 429
    denials = database.read_frame(eng, schema.risk_denials.select())
    assert denials.code.tolist() == ["RATE_LIMITED"] * 19
    clock[0] = 31.0                                                    # back-off over
    for c in cids: om.place(c, CTX)
    om.sync_open()                                                     # Alpaca acknowledges first and fills after
    assert all(get_order(eng, c).status is OrderStatus.FILLED for c in cids)
    assert fake.requests["POST /v2/orders"] == 21 and len(fake.orders) == 20   # one order per intent, none twice
    assert ledger_problems(eng, acct, broker) == []


def test_f10_ib_ids_keep_increasing_through_the_order_manager_after_a_low_next_valid_id(ledger):
    from ib_async import IB
    from traderbot.brokers.ib import IBBroker
    from traderbot.fakes.ib import ACCOUNT, FakeTWS
    eng, acct = ledger
    tws = FakeTWS(next_valid_id=1)
    broker = IBBroker(tws.ib, account=ACCOUNT, stored_max_order_id=lambda: max_broker_order_id(eng, "ib"))
    store_intents(eng, acct, "test", "2022-12-28", {}, {}, [Order(f"tb-f10-{i}", "AAPL", "buy", Decimal(1)) for i in range(6)], {}, "ib")
    om = OrderManager(eng, broker, acct, LIMITS)
    for i in range(3): om.place(f"tb-f10-{i}", CTX)
    tws.connect(next_valid_id=1, ib=IB())                              # a restarted process; TWS reports a low next id
    broker = IBBroker(tws.ib, account=ACCOUNT, stored_max_order_id=lambda: max_broker_order_id(eng, "ib"))
    om = OrderManager(eng, broker, acct, LIMITS)
    for i in range(3, 6): om.place(f"tb-f10-{i}", CTX)
    ids = [int(get_order(eng, f"tb-f10-{i}").broker_order_id) for i in range(6)]
    assert ids == sorted(ids) and len(set(ids)) == 6 and tws.modified == []
    for i in range(6):
        o = get_order(eng, f"tb-f10-{i}")
        tws.fill(o.client_order_id, 1, 150.0, commission=1.0)
        assert om.sync(o.client_order_id).status is OrderStatus.FILLED
    assert ledger_problems(eng, acct, broker) == []


@pytest.mark.parametrize("settings_text, env, mode, missing", [
    ("", {}, "paper", "mode is paper"),
    ("[traderbot]\nmode = live\n[broker]\nname = alpaca\n", {"ALPACA_API_KEY": "AKx", "ALPACA_SECRET_KEY": "s"}, "paper", "TRADERBOT_LIVE_TRADING=yes is not in the environment"),
    ("[traderbot]\nmode = live\n[broker]\nname = alpaca\n", {"TRADERBOT_LIVE_TRADING": "yes"}, "paper", "ALPACA_API_KEY and ALPACA_SECRET_KEY are not set"),
    ("[traderbot]\nmode = live\n", {"TRADERBOT_LIVE_TRADING": "yes", "ALPACA_API_KEY": "AKx", "ALPACA_SECRET_KEY": "s"}, "paper", "[broker] name is paper"),
    ("[traderbot]\nmode = live\n[broker]\nname = alpaca\n", {"TRADERBOT_LIVE_TRADING": "1", "ALPACA_API_KEY": "AKx", "ALPACA_SECRET_KEY": "s"}, "paper", "TRADERBOT_LIVE_TRADING=yes is not in the environment"),
    ("[traderbot]\nmode = live\n[broker]\nname = alpaca\n", {"TRADERBOT_LIVE_TRADING": "yes", "ALPACA_API_KEY": "AKx", "ALPACA_SECRET_KEY": "s"}, "live", None),
])
def test_s3_live_only_with_every_opt_in(tmp_path, settings_text, env, mode, missing):
    (tmp_path / "settings.ini").write_text(settings_text)
    tm = trading_mode(load_settings(tmp_path / "settings.ini", env=env))
    assert tm.mode == mode
    assert (missing in tm.missing) if missing else tm.missing == ()
    assert tm.store_url.endswith("traderbot-live.db") == (mode == "live")   # live never shares the paper ledger


def test_s3_paper_keys_with_live_mode_refuse_to_start(tmp_path):
    (tmp_path / "settings.ini").write_text("[traderbot]\nmode = live\n[broker]\nname = alpaca\n")
    env = {"TRADERBOT_LIVE_TRADING": "yes", "ALPACA_API_KEY": "PKpaperkey", "ALPACA_SECRET_KEY": "s"}
    with pytest.raises(ConfigError, match="paper keys"):
        trading_mode(load_settings(tmp_path / "settings.ini", env=env))
    # and through the command line: the run refuses before anything is stored
    cli = [str(Path(sys.executable).parent / "traderbot"), "run", "daily", "-p", "mode=live"]
    run_env = {**{k: v for k, v in os.environ.items() if not k.startswith("TRADERBOT")}, **env,
               "TRADERBOT_SETTINGS": str(ROOT / "settings.ini"), "TRADERBOT__TRADERBOT__MODE": "live", "TRADERBOT__BROKER__NAME": "alpaca",
               "TRADERBOT__STORE__URL": f"sqlite:///{tmp_path}/paper.db", "TRADERBOT__STORE__LIVE_URL": f"sqlite:///{tmp_path}/live.db"}
    from test_reliability import audit, scenario, table
    paper_url = f"sqlite:///{tmp_path}/paper.db"
    eng, _, _ = scenario()["run"](paper_url)                                   # the paper account already trades
    before = {t: table(eng, t) for t in ("orders", "fills", "positions", "pipeline_runs", "paper_orders")}
    r = subprocess.run(cli, env=run_env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "paper keys" in r.stderr, r.stderr
    assert not (tmp_path / "live.db").exists() and "PKpaperkey" not in r.stderr + r.stdout
    assert {t: table(eng, t) for t in before} == before                       # neither ledger was touched
    audit(paper_url)

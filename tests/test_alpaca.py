"""The Alpaca adapter against FakeAlpaca: the real alpaca-py client over real HTTP on 127.0.0.1.

Each case states what must hold: orders are sent at most once per call, every call has a timeout, lost
answers are settled by lookup, refusals carry Alpaca's message, amounts stay exact Decimals, unknown
statuses are named, and the API keys (canaries here) never appear in a message, repr or log.
"""
from __future__ import annotations

import logging
import time
import traceback
import uuid
from decimal import Decimal

import pandas as pd
import pytest

from traderbot.brokers.alpaca import ALPACA_STATUS, AlpacaBroker
from traderbot.core import Broker, BrokerError, DuplicateOrder, Order, OrderRejected, OrderStatus, Position
from traderbot.fakes.alpaca import FakeAlpaca

KEY, SECRET = "CANARY-KEY-5d1c9e", "CANARY-SECRET-a7f203"   # must never show anywhere
PRICES = {"AAPL": Decimal("150.25"), "MSFT": Decimal("239.82"), "XOM": Decimal("110.19")}
TIMEOUT = 0.5
POST = "POST /v2/orders"


@pytest.fixture
def fake():
    with FakeAlpaca(KEY, SECRET, prices=dict(PRICES), cash=Decimal(100_000), hang_s=5) as f:
        yield f


@pytest.fixture
def broker(fake):
    return AlpacaBroker(KEY, SECRET, url_override=fake.url, timeout_s=TIMEOUT)


def order(cid: str, symbol="AAPL", side="buy", qty="100", limit=None) -> Order:
    return Order(cid, symbol, side, Decimal(qty), None if limit is None else Decimal(limit))


def timed(fn, *args):
    "Call fn(*args) expecting an exception; return (exception, seconds taken)."
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        fn(*args)
    return info.value, time.monotonic() - t0


def no_canary(*texts: str) -> None:
    for t in texts:
        assert KEY not in t and SECRET not in t, t


# --- an order's life -------------------------------------------------------------------------------------

def test_submit_and_partial_fills_round_trip(fake, broker):
    fake.auto_fill = False
    fake.fill_plan["AAPL"] = [40, 60]
    intent = order("tb-rt-1")
    ack = broker.submit(intent)
    assert (ack.status, ack.filled_quantity, ack.client_order_id) == (OrderStatus.ACCEPTED, 0, "tb-rt-1")
    assert str(uuid.UUID(ack.broker_order_id)) == ack.broker_order_id
    route, body = fake.bodies[-1]
    assert (route, body["qty"], body["side"], body["type"], body["time_in_force"], body["client_order_id"]) == \
           (POST, "100", "buy", "market", "day", "tb-rt-1")       # exact decimal string, DAY, our id

    local = intent.with_status(OrderStatus.SUBMITTED).with_status(OrderStatus.ACCEPTED, broker_order_id=ack.broker_order_id)
    assert fake.advance() == 1
    (f1,) = broker.fills("tb-rt-1")
    local = local.with_fill(f1)
    remote = broker.get_order("tb-rt-1")
    assert (remote.status, remote.filled_quantity, local.status) == (OrderStatus.PARTIALLY_FILLED, 40, OrderStatus.PARTIALLY_FILLED)

    fake.advance()
    fills = broker.fills("tb-rt-1")
    assert [f.quantity for f in fills] == [Decimal(40), Decimal(60)] and fills[0] == f1
    assert len({f.execution_id for f in fills}) == 2
    assert all(f.commission == 0 and f.price == Decimal("150.25") and f.timestamp.tzinfo is not None for f in fills)
    local = local.with_fill(fills[1])
    remote = broker.get_order("tb-rt-1")
    assert (remote.status, local.status, remote.average_price, local.average_price) == \
           (OrderStatus.FILLED, OrderStatus.FILLED, Decimal("150.25"), Decimal("150.25"))
    assert fake.count(POST) == 1


def test_get_order_by_client_order_id(fake, broker):
    assert broker.get_order("tb-never-sent") is None                       # Alpaca's 404 means: never reached the broker
    ack = broker.submit(order("tb-get-1", "MSFT", qty="3"))
    got = broker.get_order("tb-get-1")
    assert (got.broker_order_id, got.symbol, got.quantity, got.status) == (ack.broker_order_id, "MSFT", 3, OrderStatus.FILLED)
    assert fake.count("GET /v2/orders:by_client_order_id") == 2


# --- never twice -----------------------------------------------------------------------------------------

def test_reused_client_order_id_is_a_duplicate_forever(fake, broker):
    fake.auto_fill = False
    broker.submit(order("tb-dup-1", qty="10"))
    with pytest.raises(DuplicateOrder, match="look the order up"):
        broker.submit(order("tb-dup-1", qty="10"))
    broker.cancel("tb-dup-1")
    with pytest.raises(DuplicateOrder):                                     # still refused after a cancel
        broker.submit(order("tb-dup-1", qty="10"))
    assert [o["client_order_id"] for o in fake.orders.values()] == ["tb-dup-1"]
    assert fake.count(POST) == 3


def test_timeout_after_accept_is_retryable_and_settled_by_lookup(fake, broker):
    fake.inject("timeout_after_accept", POST)
    err, took = timed(broker.submit, order("tb-lost-1", qty="10"))
    assert isinstance(err, BrokerError) and err.retryable and "settle it by lookup" in str(err)
    assert took < TIMEOUT + 2.0, took                     # far below the fake's 5 s hang
    found = broker.get_order("tb-lost-1")
    assert found is not None and found.client_order_id == "tb-lost-1" and found.status is OrderStatus.FILLED
    assert fake.count(POST) == 1                                            # exactly one POST reached the server
    assert len(fake.orders) == 1


@pytest.mark.parametrize("fault", ["http_429", "http_504", "http_500", "drop_connection"])
def test_transient_failures_are_retryable_and_never_resent(fake, broker, fault):
    fake.inject(fault, POST)
    err, took = timed(broker.submit, order("tb-transient-1", qty="10"))
    assert isinstance(err, BrokerError) and err.retryable
    assert fake.count(POST) == 1 and took < 2.5          # alpaca-py alone would resend 429/504 three times, 3 s apart
    assert broker.get_order("tb-transient-1") is None    # the lookup settles it: never placed, so the same id may be sent
    assert broker.submit(order("tb-transient-1", qty="10")).status is OrderStatus.ACCEPTED
    assert fake.count(POST) == 2 and len(fake.orders) == 1


def test_order_manager_settles_a_lost_answer_without_resending(fake, tmp_path):
    from traderbot.store import ledger, database
    from traderbot.execution.manager import execute_order
    from traderbot.risk.gate import OrderContext, RiskLimits
    eng = database.open_store(f"sqlite:///{tmp_path / 'alpaca.db'}")
    acct = ledger.ensure_account(eng, "alpaca-demo", "paper", Decimal(100_000))
    ledger.store_intents(eng, acct, "momentum", "2022-12-28", {"AAPL": 0.1}, {}, [order("tb-om-1", qty="20")], {"AAPL": PRICES["AAPL"]}, "alpaca")
    broker = AlpacaBroker(KEY, SECRET, url_override=fake.url, timeout_s=TIMEOUT)
    ctx, limits = OrderContext(PRICES["AAPL"], Decimal(100_000), Decimal(0), market_open=True), RiskLimits(0.25, Decimal(50_000))
    fake.inject("timeout_after_accept", POST)
    first, sent = execute_order(eng, broker, acct, "tb-om-1", ctx, limits)
    assert (first.status, sent) == (OrderStatus.UNKNOWN, True)
    settled, sent = execute_order(eng, broker, acct, "tb-om-1", ctx, limits)
    assert (settled.status, settled.filled_quantity, sent) == (OrderStatus.FILLED, Decimal(20), False)
    assert fake.count(POST) == 1
    assert ledger.get_positions(eng, acct)["AAPL"].quantity == Decimal(20)
    eng.dispose()


# --- refusals and unknowns -------------------------------------------------------------------------------

def test_rejections_carry_the_brokers_message(fake, broker):
    fake.inject("reject", POST)
    with pytest.raises(OrderRejected) as info:
        broker.submit(order("tb-rej-1", qty="1"))
    assert info.value.code == "BROKER_REJECTED" and "insufficient buying power" in str(info.value)
    with pytest.raises(OrderRejected, match="insufficient buying power"):      # the book's own check: 10,000 x 150.25 > cash
        broker.submit(order("tb-rej-2", qty="10000"))
    with pytest.raises(OrderRejected, match="qty must be > 0"):
        broker.submit(order("tb-rej-3", qty="0"))
    assert fake.orders == {}


@pytest.mark.parametrize("call", ["account", "positions", "open_orders", "get_order", "fills"])
def test_a_hanging_server_fails_within_the_timeout(fake, broker, call):
    fake.inject("hang")
    args = ("tb-x",) if call == "get_order" else ()
    err, took = timed(getattr(broker, call), *args)
    assert isinstance(err, BrokerError) and err.retryable and "timeout" in str(err)
    assert TIMEOUT * 0.8 < took < TIMEOUT + 2.0, took    # the fake would hold the answer for 5 s


def test_unknown_status_is_named_not_mapped(fake, broker):
    broker.submit(order("tb-odd-1", qty="1"))
    fake.set_status("tb-odd-1", "frobnicated")
    with pytest.raises(BrokerError, match="unknown Alpaca order status 'frobnicated'"):
        broker.get_order("tb-odd-1")
    with pytest.raises(BrokerError, match="frobnicated"):
        broker.open_orders()


def test_status_table_covers_every_alpaca_status():
    from alpaca.trading.enums import OrderStatus as AlpacaStatus
    assert set(ALPACA_STATUS) == {s.value for s in AlpacaStatus}


# --- secrets ---------------------------------------------------------------------------------------------

def test_auth_failure_never_shows_the_keys(fake, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = AlpacaBroker(KEY + "-old", SECRET + "-old", url_override=fake.url, timeout_s=TIMEOUT)
    for call in (wrong.account, lambda: wrong.submit(order("tb-auth-1"))):
        with pytest.raises(BrokerError) as info:
            call()
        e = info.value
        assert not e.retryable and "HTTP 401" in str(e) and "key pair was refused" in str(e)
        assert e.__cause__ is None and e.__context__ is None                # no vendor exception (with its headers) chained
        no_canary(str(e), repr(e), "".join(traceback.format_exception(e)))
    no_canary(repr(wrong), str(wrong), caplog.text)
    assert fake.orders == {}


def test_repr_shows_endpoint_and_mode_only(fake):
    b = AlpacaBroker(KEY, SECRET, url_override=fake.url)
    assert repr(b) == f"AlpacaBroker(paper, base_url='{fake.url}', timeout_s=10.0)"
    live = AlpacaBroker(KEY, SECRET, paper=False)                            # no request is made
    assert "LIVE" in repr(live) and "https://api.alpaca.markets" in repr(live)
    assert "paper-api.alpaca.markets" in repr(AlpacaBroker(KEY, SECRET))
    no_canary(repr(b), repr(live))
    assert isinstance(b, Broker) and b.name == "alpaca"


# --- exact numbers ---------------------------------------------------------------------------------------

def test_positions_account_open_orders_and_fills_are_exact_decimals(fake, broker):
    fake.fill_plan["XOM"] = [1, 2]
    broker.submit(order("tb-num-1", "XOM", qty="3"))
    broker.submit(order("tb-num-2", "MSFT", qty="5", limit="200.01"))       # below the price: stays open
    assert broker.positions() == [Position("XOM", Decimal(3), Decimal("110.19"))]
    acct = broker.account()
    assert (acct.cash, acct.equity) == (Decimal("99669.43"), Decimal("100000.00"))
    assert all(type(x) is Decimal for x in (acct.cash, acct.equity))
    (open_,) = broker.open_orders()
    assert (open_.client_order_id, open_.limit_price, open_.status) == ("tb-num-2", Decimal("200.01"), OrderStatus.ACCEPTED)
    fills = broker.fills()
    assert [(f.client_order_id, f.quantity, f.price) for f in fills] == [("tb-num-1", Decimal(1), Decimal("110.19")), ("tb-num-1", Decimal(2), Decimal("110.19"))]
    assert sum((f.cash_flow for f in fills), Decimal(0)) == Decimal("-330.57")
    assert broker.cancel("tb-num-2").status is OrderStatus.CANCELED and broker.open_orders() == []


def test_fills_follow_pages_and_late_fills_after_cancel(fake, broker):
    fake.fill_plan["AAPL"] = [1] * 149                                     # 150 executions: two pages of activities
    broker.submit(order("tb-many-1", qty="150"))
    fake.auto_fill = False
    broker.submit(order("tb-late-1", "MSFT", qty="10"))
    fake.fill("tb-late-1", 4)
    assert broker.cancel("tb-late-1").status is OrderStatus.CANCELED
    fake.fill("tb-late-1", 6)                                             # a late fill after the cancel
    many = broker.fills("tb-many-1")
    assert len(many) == 150 and sum(f.quantity for f in many) == 150 and len({f.execution_id for f in many}) == 150
    assert fake.count("GET /v2/account/activities/{type}") == 2
    assert [f.quantity for f in broker.fills("tb-late-1")] == [Decimal(4), Decimal(6)]
    assert broker.get_order("tb-late-1").status is OrderStatus.FILLED     # Alpaca calls a completed order filled
    assert {f.client_order_id for f in broker.fills()} == {"tb-many-1", "tb-late-1"}

"""The Interactive Brokers adapter against the real `ib_async.IB` object, driven offline by `FakeTWS`.

Each test states an invariant of docs/reliability.md for IB: orders carry the client order id in `orderRef`, order ids
only increase per client id (F10), a duplicate is refused before anything is sent, a refusal keeps IB's reason,
fills carry IB's execution id and commission, money is exact, "no data" is never "zero", a lost connection is a
retryable error and never "order not found".
"""
from __future__ import annotations

import random
import socket
from decimal import Decimal

import pytest
from ib_async import IB

from traderbot.brokers.ib import IBBroker, connect_ib, ib_error, next_order_id, order_status
from traderbot.core import Account, Broker, BrokerError, ConfigError, DuplicateOrder, Order, OrderRejected, OrderStatus as S, Position
from traderbot.fakes.ib import ACCOUNT, REJECT_201, FakeTWS

pytestmark = pytest.mark.timeout(60)


def order(coid: str, symbol: str = "AAPL", side: str = "buy", qty: int = 10, limit: str | None = None) -> Order:
    return Order(coid, symbol, side, Decimal(qty), limit_price=None if limit is None else Decimal(limit))


class Store:
    "Stands in for the store's highest recorded IB order id (what `stored_max_order_id` would query)."
    def __init__(self, start: int = 0): self.max_id = start
    def record(self, o: Order) -> Order:
        self.max_id = max(self.max_id, int(o.broker_order_id)); return o


@pytest.fixture
def tws() -> FakeTWS:
    return FakeTWS(next_valid_id=1)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def broker(tws, store) -> IBBroker:
    return IBBroker(tws.ib, account=ACCOUNT, stored_max_order_id=lambda: store.max_id)


def retryable(fn, *args) -> BrokerError:
    with pytest.raises(BrokerError) as e: fn(*args)
    assert e.value.retryable, str(e.value)
    return e.value


# --- orders and their lifecycle ---------------------------------------------------------------------------

def test_adapter_implements_the_broker_port(broker):
    assert isinstance(broker, Broker) and broker.name == "ib"


def test_order_round_trip_through_accept_partial_fill_and_fill(tws, broker):
    ack = broker.submit(order("tb-1"))
    placed = tws.book[int(ack.broker_order_id)].order
    assert (placed.orderRef, placed.tif, placed.account, placed.orderType, placed.action, placed.totalQuantity) == \
        ("tb-1", "DAY", ACCOUNT, "MKT", "BUY", 10.0)
    assert (ack.client_order_id, ack.status, ack.filled_quantity) == ("tb-1", S.ACCEPTED, 0)
    tws.fill("tb-1", 4, 126.04)
    part = broker.get_order("tb-1")
    assert (part.status, part.filled_quantity, part.remaining, part.average_price) == (S.PARTIALLY_FILLED, 4, 6, Decimal("126.04"))
    assert [o.client_order_id for o in broker.open_orders()] == ["tb-1"]
    tws.fill("tb-1", 6, 126.10)
    done = broker.get_order("tb-1")
    assert (done.status, done.filled_quantity, done.average_price, done.broker_order_id) == \
        (S.FILLED, Decimal(10), Decimal("126.076"), ack.broker_order_id)
    assert broker.open_orders() == []


def test_limit_order_and_share_class_symbol_round_trip(tws, broker):
    ack = broker.submit(order("tb-brk", "BRK.B", "sell", 3, limit="345.67"))
    placed = tws.book[int(ack.broker_order_id)]
    assert (placed.contract.symbol, placed.order.orderType, placed.order.lmtPrice, placed.order.action) == ("BRK B", "LMT", 345.67, "SELL")
    assert (ack.symbol, ack.limit_price, ack.side.value) == ("BRK.B", Decimal("345.67"), "sell")


def test_cancel_after_partial_fill_keeps_the_filled_part(tws, broker):
    broker.submit(order("tb-c", limit="100"))
    tws.fill("tb-c", 4, 100.0)
    c = broker.cancel("tb-c")
    assert (c.status, c.filled_quantity) == (S.CANCELED, Decimal(4))
    assert broker.cancel("tb-c").status is S.CANCELED and tws.cancels == [int(c.broker_order_id)]   # no second cancel sent
    with pytest.raises(OrderRejected, match="UNKNOWN_ORDER"): broker.cancel("tb-never")


# --- order ids --------------------------------------------------------------------------------------------

def test_ids_strictly_increase_across_submits_and_reconnects(tws, store, broker):
    ids = [int(store.record(broker.submit(order(f"tb-{i}"))).broker_order_id) for i in range(3)]
    tws.fill("tb-0", 10, 100.0)
    tws.disconnect()
    tws.connect(next_valid_id=1)                          # same IB object, new session, low next valid id
    ids.append(int(broker.submit(order("tb-3")).broker_order_id))
    new_ib = tws.connect(next_valid_id=2, ib=IB())        # a restarted process: new IB, new adapter, the store remains
    fresh = IBBroker(new_ib, account=ACCOUNT, stored_max_order_id=lambda: store.max_id)
    ids.append(int(fresh.submit(order("tb-4")).broker_order_id))
    assert ids == sorted(set(ids)) and ids == tws.placed
    assert tws.modified == [] and all(not e.duplicate for e in tws.book.values())


def test_f10_low_next_valid_id_never_reuses_an_id(tws):
    store = Store(100)
    broker = IBBroker(tws.ib, stored_max_order_id=lambda: store.max_id)
    tws.connect(next_valid_id=3)                          # TWS reports an id far below the stored maximum
    first = broker.submit(order("tb-f10-0"))
    assert first.broker_order_id == "101"
    rng = random.Random(10)
    for i in range(1, 40):                                # reconnects with random (often low) next valid ids
        if rng.random() < 0.3: tws.connect(next_valid_id=rng.randint(1, 150))
        store.record(broker.submit(order(f"tb-f10-{i}")))
    assert len(tws.placed) == len(set(tws.placed)) == 40
    assert tws.placed == sorted(tws.placed) and tws.placed[0] == 101
    assert tws.modified == [] and all(v.status is not S.REJECTED for v in map(broker.get_order, [f"tb-f10-{i}" for i in range(40)]))
    assert next_order_id(broker_next=3, stored_max=100) == 101


def test_broker_next_valid_id_above_the_store_wins(tws, store, broker):
    tws.connect(next_valid_id=500)
    assert broker.submit(order("tb-hi")).broker_order_id == "500"


def test_without_the_store_a_reset_tws_gets_error_103_which_is_not_retryable(tws):
    # The danger the stored maximum exists for: a new process, a TWS that reports a low next valid id, and
    # earlier orders that are all done (completed orders carry no order id). IB's 103 must surface loudly.
    IBBroker(tws.ib).submit(order("tb-old"))             # orderId 1, then cancelled
    tws.ib.cancelOrder(tws.ib.trades()[0].order)
    blind = IBBroker(tws.connect(next_valid_id=1, ib=IB()))
    with pytest.raises(BrokerError, match="IB error 103") as e: blind.submit(order("tb-new"))
    assert not e.value.retryable and not isinstance(e.value, DuplicateOrder)
    assert order_status(blind.ib.trades()[-1])[0] is S.REJECTED


# --- idempotency and refusals -----------------------------------------------------------------------------

def test_duplicate_order_ref_is_refused_before_anything_is_sent(tws, broker):
    broker.submit(order("tb-dup"))
    with pytest.raises(DuplicateOrder, match="tb-dup"): broker.submit(order("tb-dup"))
    assert len(tws.placed) == 1
    tws.disconnect(); tws.connect(next_valid_id=1)      # after a reconnect the order is known through its orderRef
    with pytest.raises(DuplicateOrder): broker.submit(order("tb-dup"))
    tws.on_order = "reject"
    with pytest.raises(OrderRejected): broker.submit(order("tb-rej"))
    with pytest.raises(DuplicateOrder): broker.submit(order("tb-rej"))   # a refused id is not sent again either
    assert len(tws.placed) == 2


def test_reject_201_is_order_rejected_with_ibs_message(tws, broker):
    tws.on_order = "reject"
    with pytest.raises(OrderRejected) as e: broker.submit(order("tb-201", "XOM", qty=10_000))
    assert e.value.code == "BROKER_REJECTED" and str(e.value).startswith("BROKER_REJECTED: IB error 201")
    assert REJECT_201 in str(e.value) and "tb-201" in str(e.value)
    view = broker.get_order("tb-201")
    assert view.status is S.REJECTED and view.reason == f"IB error 201: {REJECT_201}"


def test_no_acknowledgement_is_ambiguous_and_settled_by_lookup(tws):
    tws.on_order = "silent"
    broker = IBBroker(tws.ib, timeout_s=0.05)
    err = retryable(broker.submit, order("tb-hang"))
    assert "was sent but not acknowledged" in str(err)
    assert broker.get_order("tb-hang").status is S.SUBMITTED
    with pytest.raises(DuplicateOrder): broker.submit(order("tb-hang"))
    tws.accept("tb-hang")
    assert broker.get_order("tb-hang").status is S.ACCEPTED and len(tws.placed) == 1


# --- fills --------------------------------------------------------------------------------------------------

def test_fills_carry_exec_id_and_commission_that_may_arrive_later(tws, broker):
    broker.submit(order("tb-f"))
    broker.submit(order("tb-g", "MSFT", "sell", 2))
    x1 = tws.fill("tb-f", 4, 126.04, commission=None, exec_id="0000e0d5.6523f60b.01.01")
    f = broker.fills("tb-f")
    assert [(x.execution_id, x.side.value, x.quantity, x.price, x.commission) for x in f] == \
        [(x1, "buy", Decimal(4), Decimal("126.04"), Decimal(0))]
    assert str(f[0].timestamp.tz) == "UTC" and f[0].timestamp == tws.clock
    tws.report_commission(x1, 0.35)
    assert broker.fills("tb-f")[0].commission == Decimal("0.35")
    x2 = tws.fill("tb-g", 2, 239.82, commission=1.0)
    every = broker.fills()
    assert [x.execution_id for x in every] == [x1, x2] and [x.client_order_id for x in every] == ["tb-f", "tb-g"]
    assert every[1].side.value == "sell" and every[1].commission == Decimal("1.0")


def test_fills_never_return_an_exec_id_twice_in_one_call(tws, broker, monkeypatch):
    broker.submit(order("tb-d"))
    tws.fill("tb-d", 10, 50.0)
    real = tws.ib.fills()
    monkeypatch.setattr(tws.ib, "fills", lambda: real + real)   # e.g. a live execution and its replay
    assert len(broker.fills("tb-d")) == 1


# --- positions and account -------------------------------------------------------------------------------

def test_positions_and_account_parse_to_exact_decimals(tws, broker):
    tws.set_position("AAPL", 1234, 126.0425)
    tws.set_position("BRK B", -3, 345.67)
    tws.set_account_value("TotalCashValue", "100000.01")
    tws.set_account_value("NetLiquidation", "255555.57")
    tws.set_account_value("NetLiquidation", "1.0", currency="BASE")     # other currencies are not read
    assert broker.positions() == [Position("AAPL", Decimal(1234), Decimal("126.0425")), Position("BRK.B", Decimal(-3), Decimal("345.67"))]
    assert broker.account() == Account(cash=Decimal("100000.01"), equity=Decimal("255555.57"))
    assert sum(p.quantity for p in broker.positions()) == Decimal(1231)


def test_missing_net_liquidation_is_an_error_not_zero(tws, broker):
    tws.set_account_value("TotalCashValue", "100000.00")
    tws.set_account_value("NetLiquidation", "90000.00", currency="EUR")
    err = retryable(broker.account)
    assert "NetLiquidation" in str(err) and "zero" in str(err)


# --- connection ------------------------------------------------------------------------------------------

def test_disconnected_every_call_is_a_retryable_error_never_not_found(tws, broker):
    broker.submit(order("tb-x"))
    tws.disconnect()
    for call, args in [(broker.submit, (order("tb-y"),)), (broker.get_order, ("tb-x",)), (broker.cancel, ("tb-x",)),
                       (broker.fills, ()), (broker.positions, ()), (broker.account, ()), (broker.open_orders, ())]:
        assert "not connected" in str(retryable(call, *args))
    assert len(tws.placed) == 1


def test_ib_link_lost_1100_is_retryable_until_restored(tws, broker):
    broker.submit(order("tb-l"))
    tws.error(1100, "Connectivity between IB and Trader Workstation has been lost.")
    assert "IB error 1100" in str(retryable(broker.get_order, "tb-l"))
    retryable(broker.submit, order("tb-m"))
    tws.error(1102, "Connectivity between IB and Trader Workstation has been restored - data maintained.")
    assert broker.get_order("tb-l").status is S.ACCEPTED and len(tws.placed) == 1
    assert ib_error(1102, "restored").retryable and ib_error(1100, "lost").retryable


def test_reconnect_finds_earlier_orders_and_fills_through_order_ref(tws, store, broker):
    a = store.record(broker.submit(order("tb-a")))
    b = store.record(broker.submit(order("tb-b", "MSFT", qty=5, limit="239.82")))
    c = store.record(broker.submit(order("tb-c", "XOM", qty=7, limit="100")))
    xa = [tws.fill("tb-a", 4, 126.04, commission=0.4), tws.fill("tb-a", 6, 126.10, commission=None)]
    tws.fill("tb-b", 2, 239.80)
    broker.cancel("tb-c")
    new_ib = tws.connect(next_valid_id=1, ib=IB())           # process restart: ib_async starts from nothing
    fresh = IBBroker(new_ib, account=ACCOUNT, stored_max_order_id=lambda: store.max_id)
    got = {k: fresh.get_order(k) for k in ("tb-a", "tb-b", "tb-c")}
    assert (got["tb-a"].status, got["tb-a"].filled_quantity, got["tb-a"].broker_order_id, got["tb-a"].average_price) == \
        (S.FILLED, Decimal(10), a.broker_order_id, Decimal("126.076"))
    assert (got["tb-b"].status, got["tb-b"].filled_quantity, got["tb-b"].broker_order_id) == (S.PARTIALLY_FILLED, Decimal(2), b.broker_order_id)
    assert got["tb-c"].status is S.CANCELED and fresh.get_order("tb-never") is None
    assert [(f.execution_id, f.commission) for f in fresh.fills("tb-a")] == [(xa[0], Decimal("0.4")), (xa[1], Decimal(0))]
    assert [o.client_order_id for o in fresh.open_orders()] == ["tb-b"]
    assert int(fresh.submit(order("tb-d")).broker_order_id) > max(int(a.broker_order_id), int(b.broker_order_id), int(c.broker_order_id))


def test_connect_ib_checks_arguments_and_reports_no_tws_as_retryable():
    for bad in [dict(port=0), dict(port=70000), dict(host=""), dict(client_id=-1), dict(timeout_s=0), dict(port=True)]:
        with pytest.raises(ConfigError): connect_ib(**bad)
    with socket.socket() as s:                             # a local port with nothing listening
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    err = retryable(connect_ib, "127.0.0.1", port, 7, 2)
    assert f"127.0.0.1:{port}" in str(err)

"""traderbot.store behaves the same on SQLite and on a real PostgreSQL server.

Every test takes `store_url` (a fresh empty database) or `engine` (the same, migrated) from conftest.py,
both parametrized over ["sqlite", "postgresql"]. After anything that touches the ledger, `assert_ledger`
checks the invariants of docs/reliability.md: every order has a client order id, fills add up to each order's
filled quantity and to the positions, and cash is the initial cash plus the fills' cash flows, exactly.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from collections import defaultdict
from decimal import Decimal

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings, strategies as st

from traderbot.store import schema, ledger, database, runs
from traderbot.core import DataError, Fill, InvalidTransition, Order, OrderStatus, StorageError, client_order_id
from traderbot.store.ledger import (account_cash, ensure_account, equity_curve, fills_frame, get_order, get_positions, orders_for,
                                    orders_frame, positions_frame, record_fill, record_snapshot, save_order, store_intents)
from traderbot.brokers import paper
from traderbot.store.database import current_revision, migrate, schema_differences
from traderbot.store.runs import finish_run, get_run, runs_frame, start_run

S = OrderStatus
TS = pd.Timestamp("2022-12-28 21:00", tz="UTC")
DAY = "2022-12-28"
CASH = Decimal("100000")
HEAD = "0008"


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------

def new_account(engine, cash=CASH, mode="paper") -> int:
    return ensure_account(engine, f"acct-{uuid.uuid4().hex[:8]}", mode, cash)


def cid(aid: int, strategy: str, symbol: str, as_of=DAY) -> str:
    "The deterministic client order id of `symbol` in account `aid`'s rebalance."
    return client_order_id(f"account-{aid}", strategy, as_of, symbol)


def account_name(engine, aid: int) -> str:
    with engine.connect() as con:
        return con.execute(sa.select(schema.accounts.c.name).where(schema.accounts.c.id == aid)).scalar_one()


def put_intent(engine, aid, symbol="AAPL", side="buy", qty=Decimal(10), strategy="momentum", as_of=DAY,
               limit_price=None, reference_price=Decimal("100"), weight=0.1, run_id=None) -> Order:
    "Store one NEW intent (with its signal) and return it."
    o = Order(cid(aid, strategy, symbol, as_of), symbol, side, qty, limit_price=limit_price)
    store_intents(engine, aid, strategy, as_of, {symbol: weight}, {symbol: "test"}, [o], {symbol: reference_price},
                  "paper", run_id=run_id)
    return o


def put_order(engine, aid, *args, **kwargs) -> Order:
    "Store one intent and mark it SUBMITTED, as the order manager does before the broker call."
    return save_order(engine, put_intent(engine, aid, *args, **kwargs).with_status(S.SUBMITTED))


def fill(o: Order, qty, price, commission=Decimal(0), execution_id=None, timestamp=TS) -> Fill:
    return Fill(execution_id or f"x-{uuid.uuid4().hex[:12]}", o.client_order_id, o.symbol, o.side,
                Decimal(qty), Decimal(price), Decimal(commission), timestamp)


def rows(engine_or_con, table) -> list[tuple]:
    "All rows of `table`, as plain tuples, in primary-key order."
    if isinstance(engine_or_con, sa.Engine):
        with engine_or_con.connect() as con:
            return rows(con, table)
    return [tuple(r) for r in engine_or_con.execute(sa.select(table).order_by(*table.primary_key.columns))]


def count(engine, table) -> int:
    with engine.connect() as con:
        return con.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def state(engine) -> tuple:
    "Everything a fill can change: orders, fills, positions, accounts (cash), signals."
    with engine.connect() as con:
        return tuple(rows(con, t) for t in (schema.orders, schema.fills, schema.positions, schema.accounts, schema.signals))


def assert_ledger(engine, account_id: int) -> None:
    "The ledger of `account_id` is consistent, exactly (Decimal ==)."
    t_o, t_f, t_p, t_a = schema.orders, schema.fills, schema.positions, schema.accounts
    with engine.connect() as con:
        orders = {r.client_order_id: r for r in con.execute(sa.select(t_o).where(t_o.c.account_id == account_id))}
        fills = list(con.execute(sa.select(t_f).where(t_f.c.account_id == account_id).order_by(t_f.c.id)))
        positions = {r.symbol: r.quantity for r in con.execute(sa.select(t_p).where(t_p.c.account_id == account_id))}
        acct = con.execute(sa.select(t_a).where(t_a.c.id == account_id)).one()
    filled, held, cash = defaultdict(Decimal), defaultdict(Decimal), acct.initial_cash
    for f in fills:
        assert f.client_order_id in orders, f"fill {f.execution_id} points at unknown order {f.client_order_id}"
        o = orders[f.client_order_id]
        assert (f.symbol, f.side) == (o.symbol, o.side), f"fill {f.execution_id} does not match its order"
        f_obj = Fill(f.execution_id, f.client_order_id, f.symbol, f.side, f.quantity, f.price, f.commission, f.timestamp)
        filled[o.client_order_id] += f.quantity
        held[f.symbol] += f_obj.signed_quantity
        cash += f_obj.cash_flow
    assert len({f.execution_id for f in fills}) == len(fills)
    for coid, o in orders.items():
        assert coid and coid.startswith("tb-"), f"order {o.id} has no client order id"
        assert o.filled_quantity == filled[coid], f"{coid}: filled_quantity {o.filled_quantity} != fills {filled[coid]}"
        assert Decimal(0) <= o.filled_quantity <= o.quantity, f"{coid}: filled {o.filled_quantity} of {o.quantity}"
        if o.filled_quantity == o.quantity:
            assert o.status == S.FILLED.value, f"{coid}: fully filled but {o.status}"
        elif o.filled_quantity > 0:
            assert o.status in (S.PARTIALLY_FILLED.value, S.CANCELED.value, S.EXPIRED.value), f"{coid}: {o.status}"
    assert {s: q for s, q in positions.items() if q != 0} == {s: q for s, q in held.items() if q != 0}
    assert set(positions) == set(held), "a position row without fills, or fills without a position row"
    assert acct.cash == cash, f"cash {acct.cash} != initial {acct.initial_cash} + fills' cash flows = {cash}"


# ---------------------------------------------------------------------------------------------------------
# Connections and migrations
# ---------------------------------------------------------------------------------------------------------

def test_backend_is_really_the_one_asked_for(engine, store_url):
    backend = sa.make_url(store_url).get_backend_name()
    assert engine.dialect.name == backend
    with engine.connect() as con:
        if backend == "sqlite":
            assert con.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert con.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert con.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        else:
            assert con.exec_driver_sql("SHOW server_version_num").scalar().isdigit()
            assert "PostgreSQL" in con.exec_driver_sql("SELECT version()").scalar()


def test_migrate_empty_database_reaches_head(store_url):
    eng = database.connect(store_url)
    try:
        assert current_revision(eng) is None
        assert sa.inspect(eng).get_table_names() == []
        assert migrate(eng) is eng
        assert current_revision(eng) == HEAD
        assert schema_differences(eng, paper.metadata) == []
        assert set(sa.inspect(eng).get_table_names()) == set(schema.metadata.tables) | set(paper.metadata.tables) | {"alembic_version"}
    finally:
        eng.dispose()


def _schema(eng) -> dict:
    insp = sa.inspect(eng)
    return {t: ([(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
                sorted(str(u["column_names"]) for u in insp.get_unique_constraints(t)),
                sorted(str(fk["referred_table"]) + str(fk["constrained_columns"]) for fk in insp.get_foreign_keys(t)))
            for t in sorted(insp.get_table_names())}


def test_migrating_twice_is_a_no_op(engine):
    aid = new_account(engine)
    before = (_schema(engine), rows(engine, schema.accounts))
    migrate(engine)
    database.open_store(engine.url.render_as_string(hide_password=False)).dispose()
    assert current_revision(engine) == HEAD
    assert (_schema(engine), rows(engine, schema.accounts)) == before
    assert account_cash(engine, aid) == CASH
    assert schema_differences(engine, paper.metadata) == []


def test_downgrade_to_base_then_upgrade_again(engine):
    from alembic import command
    new_account(engine)
    with engine.begin() as con:
        command.downgrade(database.alembic_config(engine, con), "base")
    assert current_revision(engine) is None
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert current_revision(engine) == HEAD
    assert schema_differences(engine, paper.metadata) == []
    assert count(engine, schema.accounts) == 0          # the downgrade really dropped the data
    aid = new_account(engine)
    o = put_intent(engine, aid)
    assert get_order(engine, o.client_order_id) == o


def test_upgrade_from_0002_keeps_accounts_and_adds_an_empty_profile(engine):
    from alembic import command
    aid = new_account(engine)
    with engine.begin() as con:
        command.downgrade(database.alembic_config(engine, con), "0002")
    assert current_revision(engine) == "0002"
    assert "alerts" not in sa.inspect(engine).get_table_names()
    migrate(engine)
    assert (current_revision(engine), schema_differences(engine, paper.metadata)) == (HEAD, [])
    assert account_cash(engine, aid) == CASH                  # the account's money survived the round trip
    assert ledger.get_profile(engine, aid).model_dump() == {"risk_tolerance": None, "optimizer": None, "limits": {}, "sector_preferences": {}, "tax_aware": None}
    ledger.record_alert(engine, "warning", "limit:VAR_BUDGET", "VaR 5.2% > budget 5.0%", {"var": 0.052, "budget": 0.05}, aid)
    assert ledger.alerts_frame(engine)["numbers"].tolist() == [{"var": 0.052, "budget": 0.05}]


def test_foreign_keys_are_enforced(engine):
    o = Order(client_order_id("ghost", "momentum", DAY, "AAPL"), "AAPL", "buy", Decimal(1))
    with pytest.raises(StorageError):
        store_intents(engine, 999, "momentum", DAY, {}, {}, [o], {}, "paper")
    assert count(engine, schema.orders) == 0
    aid = new_account(engine)
    with pytest.raises(StorageError, match="no order"):
        record_fill(engine, aid, fill(o, 1, 100))
    assert count(engine, schema.fills) == 0 and account_cash(engine, aid) == CASH


# ---------------------------------------------------------------------------------------------------------
# Exact Decimals and aware timestamps
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("qty, price", [
    (Decimal("0.1") + Decimal("0.2"), Decimal("126.04")),
    (Decimal("123456789.123456789"), Decimal("0.0001")),
    (Decimal("0.000000001"), Decimal("98765.4321098765")),
    (Decimal("1000000"), Decimal("0.1234567891")),
    (Decimal("12.50"), Decimal("99999999.9999999999")),
])
def test_decimal_round_trip_is_exact(engine, qty, price):
    assert Decimal("0.1") + Decimal("0.2") == Decimal("0.3")
    aid = new_account(engine)
    o = put_intent(engine, aid, qty=qty, limit_price=price, reference_price=price)
    back = get_order(engine, o.client_order_id)
    assert back == o
    assert (back.quantity, back.limit_price) == (qty, price)
    assert type(back.quantity) is Decimal and type(back.limit_price) is Decimal
    with engine.connect() as con:
        ref = con.execute(sa.select(schema.orders.c.reference_price)).scalar_one()
    assert ref == price and type(ref) is Decimal


def test_fractional_share_ledger_is_exact(engine):
    """Alpaca reports fractional quantities with 9 decimals and prices with 4: a notional has 13 decimals,
    an average price is a quotient. The ledger must keep them exactly on every backend."""
    aid = new_account(engine)
    o = put_order(engine, aid, qty=Decimal("3.000000000"))
    f1 = fill(o, "0.123456789", "123.4567", "0.0001")
    f2 = fill(o, "1.876543211", "123.4568", "0.0002")
    assert record_fill(engine, aid, f1) and record_fill(engine, aid, f2)
    assert account_cash(engine, aid) == CASH + f1.cash_flow + f2.cash_flow
    back = get_order(engine, o.client_order_id)
    assert back.filled_quantity == Decimal(2)
    assert back.average_price == (f1.quantity * f1.price + f2.quantity * f2.price) / Decimal(2)
    assert get_positions(engine, aid)["AAPL"].average_cost == back.average_price
    assert_ledger(engine, aid)


def test_aware_timestamps_come_back_aware_utc(engine):
    aid = new_account(engine)
    o = put_order(engine, aid)
    ny = pd.Timestamp("2022-12-28 16:00:00.123456", tz="America/New_York")
    assert record_fill(engine, aid, fill(o, 1, 100, timestamp=ny))
    assert record_fill(engine, aid, fill(o, 1, 100, timestamp=dt.datetime(2022, 12, 29, 21, tzinfo=dt.timezone.utc)))
    ts = fills_frame(engine, account_name(engine, aid))["timestamp"].tolist()
    assert [t == e for t, e in zip(ts, [pd.Timestamp("2022-12-29 21:00", tz="UTC"), ny])] == [True, True]
    for t in ts:
        assert t.tzinfo is not None and t.utcoffset() == dt.timedelta(0) and str(t.tz) == "UTC"
    start_run(engine, "run-1", "daily", {"as_of": DAY})
    finish_run(engine, "run-1", "succeeded")
    r = get_run(engine, "run-1")
    for t in (r["started_at"], r["finished_at"]):
        assert t.tzinfo is not None and t.utcoffset() == dt.timedelta(0)
    assert r["finished_at"] >= r["started_at"] and r["duration_s"] >= 0
    created = orders_frame(engine, account_name(engine, aid))["created_at"].iloc[0]
    assert created.utcoffset() == dt.timedelta(0) and abs(pd.Timestamp.now(tz="UTC") - created) < pd.Timedelta("5min")


def test_naive_datetime_is_refused_with_storage_error(engine):
    aid = new_account(engine)
    o = put_order(engine, aid)
    before = state(engine)
    with pytest.raises(StorageError, match="naive"):
        record_fill(engine, aid, fill(o, 1, 100, timestamp=dt.datetime(2022, 12, 28, 21, 0)))
    assert state(engine) == before
    start_run(engine, "run-1", "daily", {})
    with pytest.raises(StorageError, match="naive"):
        runs.record_run_fields(engine, "run-1", finished_at=pd.Timestamp("2022-12-28 21:00"))
    assert get_run(engine, "run-1")["finished_at"] is None


def test_overlong_text_is_refused_the_same_way_on_both_backends(engine):
    """VARCHAR(n) is enforced by PostgreSQL (as a raw sqlalchemy DataError) and ignored by SQLite: the store
    must refuse an over-long broker execution id or run id with StorageError on both, keeping nothing."""
    aid = new_account(engine)
    o = put_order(engine, aid)
    before = state(engine)
    with pytest.raises(StorageError):
        record_fill(engine, aid, fill(o, 1, 100, execution_id="e" * 65))
    assert state(engine) == before
    with pytest.raises(StorageError):
        start_run(engine, "r" * 65, "daily", {})
    assert runs_frame(engine).empty


# ---------------------------------------------------------------------------------------------------------
# Intents
# ---------------------------------------------------------------------------------------------------------

def test_duplicate_intent_is_refused_and_nothing_half_written(engine):
    aid = new_account(engine)
    first = put_intent(engine, aid, symbol="AAPL", qty=Decimal(7), reference_price=Decimal("126.04"))
    before = (rows(engine, schema.orders), rows(engine, schema.signals))
    assert len(before[0]) == 1 and len(before[1]) == 1
    # a second batch (another strategy, so its signal itself is new) carrying a new order and the same AAPL id
    dup = Order(first.client_order_id, "AAPL", "sell", Decimal(99))
    other = Order(cid(aid, "meanrev", "NVDA"), "NVDA", "buy", Decimal(3))
    with pytest.raises(StorageError, match="uq_orders_client_order_id|UNIQUE constraint failed: orders.client_order_id"):
        store_intents(engine, aid, "meanrev", DAY, {"NVDA": 0.5, "MSFT": 0.2}, {"NVDA": "why"}, [other, dup],
                      {"NVDA": Decimal("150"), "AAPL": Decimal("1")}, "paper")
    assert (rows(engine, schema.orders), rows(engine, schema.signals)) == before
    assert get_order(engine, first.client_order_id) == first
    assert get_order(engine, other.client_order_id) is None
    # the very same batch again (a rerun) is refused as well, and leaves the same rows
    with pytest.raises(StorageError):
        put_intent(engine, aid, symbol="AAPL", qty=Decimal(7))
    assert (rows(engine, schema.orders), rows(engine, schema.signals)) == before


def test_only_new_intents_are_stored(engine):
    aid = new_account(engine)
    o = Order(cid(aid, "m", "AAPL"), "AAPL", "buy", Decimal(1)).with_status(S.SUBMITTED)
    with pytest.raises(StorageError, match="only NEW"):
        store_intents(engine, aid, "m", DAY, {"AAPL": 0.1}, {}, [o], {}, "paper")
    assert count(engine, schema.orders) == 0 and count(engine, schema.signals) == 0


def test_intents_keep_their_lineage(engine):
    aid = new_account(engine)
    start_run(engine, "run-7", "daily", {"as_of": DAY, "nested": {"k": [1, 2]}}, git_commit="abc123")
    o = put_intent(engine, aid, symbol="MSFT", run_id="run-7", weight=0.25)
    with engine.connect() as con:
        r = con.execute(sa.select(schema.orders).where(schema.orders.c.client_order_id == o.client_order_id)).one()
        sig = con.execute(sa.select(schema.signals).where(schema.signals.c.id == r.signal_id)).one()
    assert (r.run_id, r.strategy, r.as_of, r.broker, r.status) == ("run-7", "momentum", dt.date(2022, 12, 28), "paper", "new")
    assert (sig.symbol, sig.target_weight, sig.run_id) == ("MSFT", 0.25, "run-7")
    assert get_run(engine, "run-7")["parameters"] == {"as_of": DAY, "nested": {"k": [1, 2]}}
    assert orders_for(engine, aid, DAY, "momentum") == [o] and orders_for(engine, aid, "2022-12-29") == []


# ---------------------------------------------------------------------------------------------------------
# Fills
# ---------------------------------------------------------------------------------------------------------

def test_partial_then_full_fill(engine):
    aid = new_account(engine)
    o = put_intent(engine, aid, qty=Decimal(10))
    o = save_order(engine, o.with_status(S.SUBMITTED))
    o = save_order(engine, o.with_status(S.ACCEPTED, broker_order_id="b-1"))
    f1 = fill(o, 4, "100.01", "0.20")
    assert record_fill(engine, aid, f1)
    back = get_order(engine, o.client_order_id)
    assert (back.status, back.filled_quantity, back.average_price, back.broker_order_id) == (S.PARTIALLY_FILLED, 4, Decimal("100.01"), "b-1")
    assert_ledger(engine, aid)
    f2 = fill(o, 6, "101.11", "0.30")
    assert record_fill(engine, aid, f2)
    back = get_order(engine, o.client_order_id)
    assert (back.status, back.filled_quantity) == (S.FILLED, Decimal(10))
    assert back.average_price == (4 * Decimal("100.01") + 6 * Decimal("101.11")) / 10 == Decimal("100.67")
    assert account_cash(engine, aid) == CASH - (4 * Decimal("100.01") + 6 * Decimal("101.11")) - Decimal("0.50")
    pos = get_positions(engine, aid)
    assert list(pos) == ["AAPL"] and (pos["AAPL"].quantity, pos["AAPL"].average_cost) == (Decimal(10), Decimal("100.67"))
    assert_ledger(engine, aid)


def test_duplicate_execution_id_changes_nothing(engine):
    aid = new_account(engine)
    o = put_order(engine, aid, qty=Decimal(10))
    f = fill(o, 3, "50.5", "0.1", execution_id="exec-1")
    assert record_fill(engine, aid, f) is True
    before = state(engine)
    assert record_fill(engine, aid, f) is False
    assert record_fill(engine, aid, dataclasses.replace(f, quantity=Decimal(5), price=Decimal(1))) is False
    assert state(engine) == before
    assert_ledger(engine, aid)


def test_overfill_is_refused_and_changes_nothing(engine):
    aid = new_account(engine)
    o = put_order(engine, aid, qty=Decimal("0.3"))
    assert record_fill(engine, aid, fill(o, "0.1", "126.10", "0.01"))
    before = state(engine)
    with pytest.raises(InvalidTransition, match="overfill"):
        record_fill(engine, aid, fill(o, "0.2000000001", "126.10"))
    assert state(engine) == before
    assert get_order(engine, o.client_order_id).status is S.PARTIALLY_FILLED
    assert record_fill(engine, aid, fill(o, "0.2", "126.10"))            # exactly the rest is fine
    assert get_order(engine, o.client_order_id).status is S.FILLED
    assert_ledger(engine, aid)


def test_fill_of_wrong_side_or_unknown_order_changes_nothing(engine):
    aid = new_account(engine)
    o = put_order(engine, aid, qty=Decimal(5))
    before = state(engine)
    with pytest.raises(InvalidTransition, match="does not belong"):
        record_fill(engine, aid, Fill("x-side", o.client_order_id, "AAPL", "sell", Decimal(1), Decimal(1), Decimal(0), TS))
    ghost = Order("tb-ghost", "AAPL", "buy", Decimal(1))
    with pytest.raises(StorageError, match="no order"):
        record_fill(engine, aid, fill(ghost, 1, 1))
    assert state(engine) == before


def test_late_fill_after_cancel_is_accepted(engine):
    aid = new_account(engine)
    o = put_intent(engine, aid, symbol="MSFT", side="sell", qty=Decimal(5))
    o = save_order(engine, o.with_status(S.SUBMITTED))
    assert record_fill(engine, aid, fill(o, 2, 50))
    save_order(engine, get_order(engine, o.client_order_id).with_status(S.CANCELED))
    assert record_fill(engine, aid, fill(o, 1, 51))
    assert (get_order(engine, o.client_order_id).status, get_order(engine, o.client_order_id).filled_quantity) == (S.CANCELED, 3)
    assert record_fill(engine, aid, fill(o, 2, 52))
    assert get_order(engine, o.client_order_id).status is S.FILLED
    assert get_positions(engine, aid)["MSFT"].quantity == Decimal(-5)       # a short: sells move it below zero
    assert account_cash(engine, aid) == CASH + 2 * 50 + 51 + 2 * 52
    assert_ledger(engine, aid)


def test_selling_to_flat_leaves_no_open_position(engine):
    aid = new_account(engine)
    b = put_order(engine, aid, symbol="XOM", qty=Decimal(10), strategy="a")
    s_ = put_order(engine, aid, symbol="XOM", side="sell", qty=Decimal(10), strategy="b")
    assert record_fill(engine, aid, fill(b, 10, 100)) and record_fill(engine, aid, fill(s_, 10, 110))
    assert get_positions(engine, aid) == {}
    assert positions_frame(engine, account_name(engine, aid)).empty
    assert account_cash(engine, aid) == CASH + 100
    assert_ledger(engine, aid)


SYMBOLS = ["AAPL", "MSFT", "NVDA"]
qty_st = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("500"), places=4)
price_st = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5000"), places=4)
commission_st = st.decimals(min_value=Decimal("0"), max_value=Decimal("10"), places=4)
order_st = st.tuples(st.sampled_from(SYMBOLS), st.sampled_from(["buy", "sell"]), qty_st)
event_st = st.tuples(st.integers(0, 3), qty_st, price_st, commission_st, st.integers(0, 3))


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=st.lists(order_st, min_size=1, max_size=4), events=st.lists(event_st, min_size=1, max_size=10),
       initial=st.decimals(min_value=Decimal("0"), max_value=Decimal("10000000"), places=2))
def test_random_fill_sequences_keep_the_ledger(engine, specs, events, initial):
    aid = new_account(engine, cash=initial)      # each example its own account in the test's database
    ords = [put_order(engine, aid, sym, side, qty, strategy=f"s{i}") for i, (sym, side, qty) in enumerate(specs)]
    done: list[Fill] = []
    filled = defaultdict(Decimal)
    for k, (i, qty, price, commission, dup) in enumerate(events):
        if dup == 0 and done:                      # the same execution delivered again, maybe garbled
            again = dataclasses.replace(done[k % len(done)], quantity=qty)
            before = state(engine)
            assert record_fill(engine, aid, again) is False
            assert state(engine) == before
        else:
            o = ords[i % len(ords)]
            f = fill(o, qty, price, commission)
            if filled[o.client_order_id] + qty > o.quantity:
                before = state(engine)
                with pytest.raises(InvalidTransition, match="overfill"):
                    record_fill(engine, aid, f)
                assert state(engine) == before
            else:
                assert record_fill(engine, aid, f) is True
                filled[o.client_order_id] += qty
                done.append(f)
        assert_ledger(engine, aid)
    assert account_cash(engine, aid) == initial + sum((f.cash_flow for f in done), Decimal(0))
    expect = defaultdict(Decimal)
    for f in done:
        expect[f.symbol] += f.signed_quantity
    assert {s: p.quantity for s, p in get_positions(engine, aid).items()} == {s: q for s, q in expect.items() if q != 0}


# ---------------------------------------------------------------------------------------------------------
# The order state machine in the store
# ---------------------------------------------------------------------------------------------------------

def test_save_order_refuses_an_illegal_transition(engine):
    aid = new_account(engine)
    o = put_order(engine, aid, qty=Decimal(2))
    assert record_fill(engine, aid, fill(o, 2, 10))
    filled = get_order(engine, o.client_order_id)
    assert filled.status is S.FILLED
    before = state(engine)
    for bad in (S.CANCELED, S.NEW, S.SUBMITTED, S.DENIED):
        with pytest.raises(InvalidTransition, match=f"filled -> {bad.value}"):
            save_order(engine, dataclasses.replace(filled, status=bad, reason="late cancel"), denial=("X", "y"))
    assert state(engine) == before and get_order(engine, o.client_order_id) == filled
    assert count(engine, schema.risk_denials) == 0
    with pytest.raises(StorageError, match="not in the store"):
        save_order(engine, Order("tb-nowhere", "AAPL", "buy", Decimal(1)))


def test_save_order_with_a_stale_order_does_not_undo_recorded_fills(engine):
    """The order manager cancels with the Order it holds, while record_fill has already booked a fill:
    the cancel may go through or be refused, but the fill must stay booked on the order."""
    aid = new_account(engine)
    held = put_order(engine, aid, qty=Decimal(5))               # SUBMITTED, filled 0: what the caller holds
    assert record_fill(engine, aid, fill(held, 2, 100))         # meanwhile a fill arrives
    try:
        save_order(engine, held.with_status(S.CANCELED))        # submitted -> canceled is legal as such
    except StorageError:
        pass
    back = get_order(engine, held.client_order_id)
    assert (back.filled_quantity, back.average_price) == (Decimal(2), Decimal(100))
    assert_ledger(engine, aid)
    with pytest.raises(InvalidTransition, match="overfill"):   # the booked fill still counts against the quantity
        record_fill(engine, aid, fill(held, 4, 100))
    assert_ledger(engine, aid)


def test_save_order_records_a_denial_atomically(engine):
    aid = new_account(engine)
    o = put_intent(engine, aid, symbol="NVDA", qty=Decimal(1000))
    denied = o.with_status(S.DENIED, reason="POSITION_LIMIT: NVDA over 20%")
    save_order(engine, denied, denial=("POSITION_LIMIT", "NVDA over 20%"))
    assert get_order(engine, o.client_order_id) == denied
    assert [(r[1], r[2], r[3]) for r in rows(engine, schema.risk_denials)] == [(o.client_order_id, "POSITION_LIMIT", "NVDA over 20%")]


# ---------------------------------------------------------------------------------------------------------
# Hostile input
# ---------------------------------------------------------------------------------------------------------

HOSTILE = ["AAPL';DROP TABLE orders;--", "../x", "<script>", "\u0410APL", "aapl", ""]


@pytest.mark.parametrize("symbol", HOSTILE)
def test_hostile_symbols_are_refused_before_the_store(engine, symbol):
    aid = new_account(engine)
    keep = put_intent(engine, aid, symbol="AAPL")
    before = (rows(engine, schema.orders), rows(engine, schema.signals))
    with pytest.raises(DataError, match="invalid symbol"):
        Order("tb-x", symbol, "buy", Decimal(1))
    with pytest.raises(DataError, match="invalid symbol"):
        client_order_id("acct", "momentum", DAY, symbol)
    with pytest.raises(DataError, match="invalid symbol"):
        Fill("x", "tb-x", symbol, "buy", Decimal(1), Decimal(1), Decimal(0), TS)
    with pytest.raises(DataError, match="invalid symbol"):   # a hostile signal is refused and rolls back its batch
        store_intents(engine, aid, "other", DAY, {"MSFT": 0.1, symbol: 0.1}, {}, [], {}, "paper")
    assert get_order(engine, f"x';DELETE FROM orders;--{symbol}") is None
    assert (rows(engine, schema.orders), rows(engine, schema.signals)) == before
    assert set(schema.metadata.tables) <= set(sa.inspect(engine).get_table_names())
    assert get_order(engine, keep.client_order_id) == keep


# ---------------------------------------------------------------------------------------------------------
# Concurrency: separate engines (as separate processes would have) on the same database
# ---------------------------------------------------------------------------------------------------------

N_CONCURRENT = 200   # fills per writer in the main test
N_RACE = 60          # fills per writer where one lost update is enough to fail


def _run_writers(store_url, jobs, reader_aid=None):
    "Run each job(engine) in its own thread with its own engine, started together; re-raise the first error."
    errors, results = [], {}
    barrier = threading.Barrier(len(jobs) + (reader_aid is not None))
    stop = threading.Event()

    def work(k, job):
        eng = database.connect(store_url)
        try:
            barrier.wait(timeout=30)
            results[k] = job(eng)
        except BaseException as e:   # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            eng.dispose()

    def read():
        eng = database.connect(store_url)
        try:
            barrier.wait(timeout=30)
            while not stop.wait(0.005):   # a dashboard polling while the writers write
                account_cash(eng, reader_aid)
                get_positions(eng, reader_aid)
        except BaseException as e:   # noqa: BLE001
            errors.append(e)
        finally:
            eng.dispose()

    threads = [threading.Thread(target=work, args=(k, j), daemon=True) for k, j in enumerate(jobs)]
    if reader_aid is not None:
        threads.append(threading.Thread(target=read, daemon=True))
    for t in threads:
        t.start()
    for t in threads[:len(jobs)]:
        t.join(timeout=60)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    if errors:
        raise errors[0]
    return [results[k] for k in range(len(jobs))]


def test_concurrent_fills_on_different_orders_of_one_account(engine, store_url):
    aid = new_account(engine)
    a = put_order(engine, aid, symbol="AAPL", qty=Decimal(N_CONCURRENT), strategy="alpha")
    b = put_order(engine, aid, symbol="AAPL", qty=Decimal(N_CONCURRENT) / 2, strategy="beta")
    fa = [fill(a, 1, Decimal("100.01") + k, "0.01") for k in range(N_CONCURRENT)]
    fb = [fill(b, "0.5", Decimal("200.5") + k, "0.02") for k in range(N_CONCURRENT)]
    job = lambda fs: lambda eng: [record_fill(eng, aid, f) for f in fs]
    results = _run_writers(store_url, [job(fa), job(fb)], reader_aid=aid)
    assert all(all(r) for r in results)
    assert account_cash(engine, aid) == CASH + sum(f.cash_flow for f in fa + fb)
    assert get_positions(engine, aid)["AAPL"].quantity == Decimal(N_CONCURRENT) + Decimal(N_CONCURRENT) / 2
    assert [get_order(engine, o.client_order_id).status for o in (a, b)] == [S.FILLED, S.FILLED]
    assert count(engine, schema.fills) == 2 * N_CONCURRENT
    assert_ledger(engine, aid)


def test_concurrent_fills_on_the_same_order(engine, store_url):
    "A pipeline and a reconciler record different executions of one order at the same time."
    aid = new_account(engine)
    o = put_order(engine, aid, symbol="MSFT", qty=Decimal(2 * N_RACE))
    fs = [fill(o, 1, Decimal("300") + k, "0.01") for k in range(2 * N_RACE)]
    job = lambda part: lambda eng: [record_fill(eng, aid, f) for f in part]
    _run_writers(store_url, [job(fs[0::2]), job(fs[1::2])])
    back = get_order(engine, o.client_order_id)
    assert (back.status, back.filled_quantity) == (S.FILLED, Decimal(2 * N_RACE))
    assert account_cash(engine, aid) == CASH + sum(f.cash_flow for f in fs)
    assert_ledger(engine, aid)


def test_the_same_fills_delivered_concurrently_are_recorded_once(engine, store_url):
    "The broker's stream and a reconciler deliver the same executions at the same time (F4)."
    aid = new_account(engine)
    o = put_order(engine, aid, symbol="NVDA", qty=Decimal(N_RACE))
    fs = [fill(o, 1, Decimal("150") + k) for k in range(N_RACE)]
    job = lambda part: lambda eng: [record_fill(eng, aid, f) for f in part]
    r1, r2 = _run_writers(store_url, [job(fs), job(fs)])
    assert [x + y for x, y in zip(r1, r2)] == [1] * N_RACE      # each execution recorded by exactly one
    assert get_positions(engine, aid)["NVDA"].quantity == Decimal(N_RACE)
    assert account_cash(engine, aid) == CASH + sum(f.cash_flow for f in fs)
    assert_ledger(engine, aid)


# ---------------------------------------------------------------------------------------------------------
# Readers the dashboards use
# ---------------------------------------------------------------------------------------------------------

def test_readers_return_what_was_written(engine):
    aid, other = new_account(engine), new_account(engine)
    name = account_name(engine, aid)
    ords = [put_order(engine, aid, symbol=s, qty=Decimal(q), strategy="m") for s, q in [("MSFT", 5), ("AAPL", 3), ("NVDA", 2)]]
    put_order(engine, other, symbol="XOM", strategy="m")
    fs = [fill(ords[0], 5, "310.25", "0.5", timestamp=TS), fill(ords[1], "1.5", "126.04", "0.1", timestamp=TS + pd.Timedelta("1min")),
          fill(ords[2], 2, "140.125", "0", timestamp=TS + pd.Timedelta("2min"))]
    for f in fs:
        assert record_fill(engine, aid, f)
    # equity curve: sorted by session, replaced not duplicated, aware UTC dates
    for day, c, pv in [("2022-12-29", "99000.5", "1000.25"), ("2022-12-27", "100000", "0"), ("2022-12-28", "1", "2"),
                       ("2022-12-28", "99500", "600.75")]:
        record_snapshot(engine, aid, day, Decimal(c), Decimal(pv))
    record_snapshot(engine, other, "2022-12-30", Decimal(1), Decimal(1))
    curve = equity_curve(engine, name)
    assert list(curve.index) == [pd.Timestamp(d, tz="UTC") for d in ["2022-12-27", "2022-12-28", "2022-12-29"]]
    assert curve.tolist() == [100000.0, 100100.75, 100000.75] and curve.name == "equity"
    with engine.connect() as con:
        eq = con.execute(sa.select(schema.equity_snapshots.c.equity).where(schema.equity_snapshots.c.account_id == aid)
                         .order_by(schema.equity_snapshots.c.as_of)).scalars().all()
    assert eq == [Decimal("100000"), Decimal("100100.75"), Decimal("100000.75")]
    # positions: by symbol, exact Decimals
    pf = positions_frame(engine, name)
    assert pf["symbol"].tolist() == ["AAPL", "MSFT", "NVDA"]
    assert pf["quantity"].tolist() == [Decimal("1.5"), Decimal(5), Decimal(2)]
    assert pf["average_cost"].tolist() == [Decimal("126.04"), Decimal("310.25"), Decimal("140.125")]
    # orders: newest first, this account only
    of = orders_frame(engine, name)
    assert of["client_order_id"].tolist() == [o.client_order_id for o in reversed(ords)]
    assert of["status"].tolist() == ["filled", "partially_filled", "filled"]
    assert of["filled_quantity"].tolist() == [Decimal(2), Decimal("1.5"), Decimal(5)]
    assert of["average_price"].tolist() == [Decimal("140.125"), Decimal("126.04"), Decimal("310.25")]
    assert orders_frame(engine, name, limit=1)["symbol"].tolist() == ["NVDA"]
    # fills: newest first, exact values, aware UTC
    ff = fills_frame(engine, name)
    assert ff["execution_id"].tolist() == [f.execution_id for f in reversed(fs)]
    assert ff["price"].tolist() == [f.price for f in reversed(fs)]
    assert ff["commission"].tolist() == [f.commission for f in reversed(fs)]
    assert ff["timestamp"].tolist() == [f.timestamp for f in reversed(fs)]
    assert ff["side"].tolist() == ["buy"] * 3
    # runs: newest first
    for rid in ["r-1", "r-2", "r-3"]:
        start_run(engine, rid, "daily", {})
    finish_run(engine, "r-2", "failed", error="boom")
    rf = runs_frame(engine)
    assert rf["run_id"].tolist() == ["r-3", "r-2", "r-1"]
    assert rf["status"].tolist() == ["running", "failed", "running"] and rf["error"].tolist()[1] == "boom"
    with pytest.raises(StorageError, match="no account 'nobody'"):
        equity_curve(engine, "nobody")


def test_readers_on_an_empty_account(engine):
    name = account_name(engine, new_account(engine))
    assert equity_curve(engine, name).empty
    assert positions_frame(engine, name).empty and orders_frame(engine, name).empty and fills_frame(engine, name).empty
    assert runs_frame(engine).empty


# ---------------------------------------------------------------------------------------------------------
# Accounts and runs
# ---------------------------------------------------------------------------------------------------------

def test_ensure_account_refuses_a_paper_account_in_live_mode(engine):
    aid = ensure_account(engine, "main", "paper", Decimal("100000"))
    o = put_order(engine, aid)
    assert record_fill(engine, aid, fill(o, 1, 100))
    before = rows(engine, schema.accounts)
    with pytest.raises(StorageError, match="paper account"):
        ensure_account(engine, "main", "live", Decimal("100000"))
    assert rows(engine, schema.accounts) == before
    assert ensure_account(engine, "main", "paper", Decimal("5")) == aid      # known account: cash not reset
    assert account_cash(engine, aid) == Decimal("99900")
    live = ensure_account(engine, "main-live", "live", Decimal("1"))
    with pytest.raises(StorageError, match="live account"):
        ensure_account(engine, "main-live", "paper", Decimal("1"))
    assert live != aid and rows(engine, schema.accounts)[:1] == before


def test_runs_are_unique_and_statuses_checked(engine):
    start_run(engine, "r-1", "daily", {"a": 1}, git_commit="deadbeef")
    with pytest.raises(StorageError):
        start_run(engine, "r-1", "daily", {})
    with pytest.raises(StorageError, match="unknown status"):
        finish_run(engine, "r-1", "maybe")
    finish_run(engine, "r-1", "succeeded", data_hash="f00d", summary={"orders": 3})
    r = get_run(engine, "r-1")
    assert (r["status"], r["parameters"], r["git_commit"], r["data_hash"], r["summary"]) == ("succeeded", {"a": 1}, "deadbeef", "f00d", {"orders": 3})
    assert get_run(engine, "r-404") is None


def test_a_snapshot_sees_one_state_and_blocks_no_writer(engine):
    "A dashboard page's reads (`database.snapshot`) see the store as of their first read, on both backends; a writer meanwhile commits unblocked."
    count = lambda con: len(ledger.alerts_frame(con, "snap", limit=1000)) if ledger.find_account(con, "snap") else 0
    aid = ledger.ensure_account(engine, "snap", "paper", Decimal(1))
    with database.snapshot(engine) as view:
        before = count(view)
        ledger.record_alert(engine, "info", "test", "written while a page reads", {}, aid)   # would block here if readers blocked writers
        assert count(view) == before
    assert count(engine) == before + 1

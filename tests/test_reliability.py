"""docs/reliability.md's test catalogue, one test per case, each named after its id.

Every test asserts what must be true after its fault or bad input, and ends with `assert_ledger(engine,
account_id, broker)`, the ledger check docs/reliability.md asks for after every case:

- every order has a (well-formed, unique) client order id;
- the fills add up to each order's filled quantity and to the positions;
- cash is the initial cash plus the fills' cash flows, exactly (Decimal ==);
- a difference adopted by a reconciliation is accounted for by its recorded row (nothing changes silently);
- the ledger's positions and cash equal the broker's (unless the last reconciliation halted trading, in which
  case they differ by exactly what it recorded), and every broker execution of our orders is in the ledger;
- after a final `OrderManager.sync_open()` (the reconcile mark) no order is left SUBMITTED or UNKNOWN.

The venue is the in-process `PaperBroker` (or a scripted `Broker` where a test needs a fault the paper book
cannot produce) over a temp SQLite store. Process faults (F1, F2) kill a child process with SIGKILL at the
exact point; pipeline and security cases (F9, S1) run the real `traderbot` command in a subprocess.

The bugs these tests found in the package were fixed in the notebooks; the tests that pinned them stay as guards.
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
import signal
import subprocess
import sys
import traceback
from collections import defaultdict
from decimal import Decimal as D
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from traderbot.store import schema, ledger, database
from traderbot.store.runs import get_run
from traderbot.brokers import paper
from traderbot.store.runs import runs_frame
from traderbot.brokers.paper import PaperBroker, PaperMarket, market_at
from traderbot.core import (Account, BrokerError, CostModel, DataError, Fill, InvalidTransition, Order, OrderStatus, Position, Side,
                            TERMINAL, TRANSITIONS, client_order_id, floor_to_lot, to_decimal)
from traderbot.execution.manager import OPEN, OrderManager, ledger_differences, plan_orders, rebalance, reconcile
from traderbot.risk.gate import OrderContext, RiskLimits

S = OrderStatus
ROOT = Path(__file__).resolve().parents[1]
TRADERBOT = [str(Path(sys.executable).parent / "traderbot")]
DAY = pd.Timestamp("2022-12-28", tz="UTC")
CLOSE = pd.Timestamp("2022-12-28 21:00", tz="UTC")          # XNYS close of DAY, in UTC
CASH = D(1_000_000)
LIMITS = RiskLimits(max_position_weight=0.25, max_order_notional=D(300_000))
PRICES = {"AAPL": D("129.93"), "MSFT": D("239.82"), "XOM": D("108.39"), "JPM": D("133.22")}
WEIGHTS = pd.Series({"AAPL": 0.2, "MSFT": 0.2, "XOM": 0.2})
ID_PATTERN = re.compile(r"tb-\d{8}-[A-Z][A-Z0-9.\-]{0,15}-[0-9a-f]{10}(-r\d+)?(-p?\d{2})?")   # a re-plan round, a piece or slice
CANARIES = {"ALPACA_API_KEY": "canary-key-R3l1aB7x", "ALPACA_SECRET_KEY": "canary-secret-Q9vZp2Kw"}


# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def db(tmp_path):
    "A fresh, migrated SQLite store of the test's own."
    eng = database.open_store(f"sqlite:///{tmp_path / 'traderbot.db'}")
    yield eng
    eng.dispose()


def table(engine, t, *where) -> list[dict]:
    "Rows of table `t` (a Table or its name) as dicts."
    t = {**schema.metadata.tables, **paper.metadata.tables}[t] if isinstance(t, str) else t
    q = sa.select(t)
    for w in where: q = q.where(w)
    with engine.connect() as con: return [dict(r._mapping) for r in con.execute(q)]


def broker_cash(broker) -> D:
    "The broker's cash; for the paper book, its deposit plus every fill (needs no prices)."
    if isinstance(broker, PaperBroker):
        t = paper.paper_accounts
        with broker.engine.connect() as con:
            initial = con.execute(sa.select(t.c.initial_cash).where(t.c.account == broker.account_name)).scalar_one()
        return initial + sum((f.cash_flow for f in broker.fills()), D(0))
    return broker.account().cash


def assert_ledger(engine, account_id: int, broker) -> None:
    "docs/reliability.md's ledger check (see the module docstring), exactly."
    if broker is not None:
        OrderManager(engine, broker, account_id, LIMITS).sync_open()      # the final reconcile mark
    t_o, t_f, t_p, t_a, t_r = schema.orders, schema.fills, schema.positions, schema.accounts, schema.reconciliations
    orders = {r["client_order_id"]: r for r in table(engine, t_o, t_o.c.account_id == account_id)}
    fills = table(engine, t_f, t_f.c.account_id == account_id)
    positions = {r["symbol"]: r["quantity"] for r in table(engine, t_p, t_p.c.account_id == account_id)}
    acct = table(engine, t_a, t_a.c.id == account_id)[0]
    recs = sorted(table(engine, t_r, t_r.c.account_id == account_id), key=lambda r: r["id"])

    for coid, o in orders.items():
        assert coid and ID_PATTERN.fullmatch(coid), f"order {o['id']} has no proper client order id: {coid!r}"
        assert o["status"] not in (S.SUBMITTED.value, S.UNKNOWN.value), f"{coid} is stuck {o['status']} after a final sync"

    filled, held, cash = defaultdict(D), defaultdict(D), acct["initial_cash"]
    assert len({f["execution_id"] for f in fills}) == len(fills)
    for f in fills:
        assert f["client_order_id"] in orders, f"fill {f['execution_id']} points at an unknown order"
        o = orders[f["client_order_id"]]
        assert (f["symbol"], f["side"]) == (o["symbol"], o["side"]), f"fill {f['execution_id']} does not match its order"
        fo = Fill(f["execution_id"], f["client_order_id"], f["symbol"], f["side"], f["quantity"], f["price"], f["commission"], f["timestamp"])
        filled[fo.client_order_id] += fo.quantity
        held[fo.symbol] += fo.signed_quantity
        cash += fo.cash_flow
    for coid, o in orders.items():
        assert o["filled_quantity"] == filled[coid], f"{coid}: filled_quantity {o['filled_quantity']} != its fills {filled[coid]}"
        assert D(0) <= o["filled_quantity"] <= max(o["quantity"], D(0)), f"{coid}: filled {o['filled_quantity']} of {o['quantity']}"
        if o["status"] == S.FILLED.value:
            assert o["filled_quantity"] == o["quantity"], f"{coid}: FILLED with {o['filled_quantity']} of {o['quantity']}"
        if o["filled_quantity"] and o["filled_quantity"] == o["quantity"]:
            assert o["status"] == S.FILLED.value, f"{coid}: fully filled but {o['status']}"
        elif o["filled_quantity"] > 0:
            assert o["status"] in (S.PARTIALLY_FILLED.value, S.CANCELED.value, S.EXPIRED.value), f"{coid}: {o['status']}"
    for r in recs:        # what a reconciliation adopted from the broker is accounted for by its own row
        if r["status"] == "adjusted":
            for sym, (ours, theirs) in r["differences"]["positions"].items(): held[sym] += D(theirs) - D(ours)
            if r["differences"]["cash"]: cash += D(r["differences"]["cash"][1]) - D(r["differences"]["cash"][0])
    assert {s: q for s, q in positions.items() if q} == {s: q for s, q in held.items() if q}, "positions != fills (+ adopted differences)"
    assert acct["cash"] == cash, f"cash {acct['cash']} != initial + fills' cash flows (+ adopted differences) = {cash}"

    if broker is None: return
    last = next((r for r in reversed(recs) if r["status"] != "failed"), None)
    if last is not None and last["status"] == "halted":     # halted: the ledger differs by exactly what was recorded
        diff = last["differences"]
        expect = {s: (D(a), D(b)) for s, (a, b) in diff["positions"].items()}
        expect_cash = D(diff["cash"][1]) if diff["cash"] else acct["cash"]
    else:
        expect, expect_cash = {}, acct["cash"]
    assert ledger_differences(engine, account_id, broker) == expect
    assert broker_cash(broker) == expect_cash
    theirs = {f.execution_id for f in broker.fills() if f.client_order_id in orders}
    assert theirs == {f["execution_id"] for f in fills}, "a broker execution of one of our orders is missing from the ledger"


def audit(url: str, account: str = "default") -> None:
    "`assert_ledger` for a store a real command traded: its paper venue keeps its book in the same store."
    eng = database.connect(url)
    try: assert_ledger(eng, ledger.account_id(eng, account), paper_broker(eng, account, {}))
    finally: eng.dispose()


def intent(engine, aid, account, symbol, side, qty, strategy="manual", as_of=DAY, limit_price=None, ref=None) -> Order:
    "Store one NEW intent (and its signal) and return it."
    o = Order(client_order_id(account, strategy, as_of, symbol), symbol, side, qty, limit_price=limit_price)
    ledger.store_intents(engine, aid, strategy, as_of, {symbol: 0.1}, {symbol: "test"}, [o],
                        {symbol: ref} if ref is not None else {}, "paper")
    return o


def context(engine, aid, symbol, price, market_open=True, tradable=True) -> OrderContext:
    "An `OrderContext` from the ledger (equity at `PRICES`), as `_execute_one` builds it."
    pos = ledger.get_positions(engine, aid)
    cash = ledger.account_cash(engine, aid)
    equity = cash + sum((p.quantity * PRICES.get(s, D(0)) for s, p in pos.items()), D(0))
    return OrderContext(price, equity, pos[symbol].quantity if symbol in pos else D(0), market_open, tradable=tradable, cash=cash)


def paper_broker(engine, account="default", prices=PRICES, at=CLOSE, **kw) -> PaperBroker:
    "A paper broker for `account` at the session of `at`, moved there (earlier day orders expire)."
    b = PaperBroker(engine, account, market_at(dict(prices), at, kw.pop("volumes", None)), CostModel(), kw.pop("cash", CASH), **kw)
    b.set_market(b.market)
    return b


class ScriptedBroker:
    "A `Broker` whose executions a test scripts: `execute` books a fill (also after a cancel: a late fill)."
    name = "scripted"

    def __init__(self, cash=CASH):
        self.orders: dict[str, Order] = {}
        self.executions: list[Fill] = []
        self.deliver_twice = False      # fills() reports every execution twice
        self.initial_cash = cash

    def submit(self, order):
        self.orders[order.client_order_id] = dataclasses.replace(order, status=S.ACCEPTED, filled_quantity=D(0),
                                                                 broker_order_id=f"S-{len(self.orders) + 1}")
        return self.orders[order.client_order_id]

    def get_order(self, coid): return self.orders.get(coid)

    def cancel(self, coid):
        o = self.orders[coid]
        if o.status in (S.ACCEPTED, S.PARTIALLY_FILLED): self.orders[coid] = dataclasses.replace(o, status=S.CANCELED)
        return self.orders[coid]

    def execute(self, coid, qty, price, commission="0.25", ts=CLOSE) -> Fill:
        o = self.orders[coid]
        f = Fill(f"{o.broker_order_id}-{sum(x.client_order_id == coid for x in self.executions) + 1}", coid, o.symbol, o.side,
                 D(qty), D(price), D(commission), ts)
        done = o.filled_quantity + f.quantity
        late = o.status in (S.CANCELED, S.EXPIRED)
        status = S.FILLED if done == o.quantity else (o.status if late else S.PARTIALLY_FILLED)
        self.orders[coid] = dataclasses.replace(o, filled_quantity=done, status=status)
        self.executions.append(f)
        return f

    def fills(self, coid=None):
        out = [f for f in self.executions if coid is None or f.client_order_id == coid]
        return out + out if self.deliver_twice else out

    def open_orders(self): return [o for o in self.orders.values() if o.status in (S.ACCEPTED, S.PARTIALLY_FILLED)]

    def positions(self):
        q = defaultdict(D)
        for f in self.executions: q[f.symbol] += f.signed_quantity
        return [Position(s, v) for s, v in sorted(q.items()) if v]

    def account(self):
        cash = self.initial_cash + sum((f.cash_flow for f in self.executions), D(0))
        return Account(cash, cash)


# ---------------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------------

L1_SEEDS = tuple(range(101, 111))
L1_ORDERS = 1_000                     # per seed: 10 x 1,000 = 10,000 random orders in all
L1_SYMBOLS = ("AAPL", "MSFT", "NVDA", "XOM", "JPM", "KO")
L1_UNTRADABLE = "ZZZZ"                # never priced by the venue
L1_SESSIONS = 5
L1_VOLUME_SHARE = 0.02
L1_WORKERS = max(1, min(2, len(os.sched_getaffinity(0))))


def l1_random_orders(seed: int, url: str) -> dict:
    """One account's share of L1 in its own store: `L1_ORDERS` random orders over `L1_SESSIONS` sessions.
    Asserts everything per account (ending with `assert_ledger`) and returns counts for the coverage checks."""
    rng = random.Random(seed)
    db = database.open_store(url)
    name, initial = f"load-{seed}", D(5_000_000)
    aid = ledger.ensure_account(db, name, "paper", initial)
    limits = RiskLimits(max_position_weight=0.06, max_order_notional=D(250_000))
    px = {s: D(rng.randint(2_000, 20_000)) / 100 for s in L1_SYMBOLS}
    days = pd.bdate_range("2022-11-01", periods=L1_SESSIONS + 1, tz="UTC")
    caps: dict[tuple, D] = {}
    broker, om, state = None, None, "active"
    for day in days[:-1]:
        fill_time = day + pd.Timedelta(hours=21)
        volumes = {s: D(rng.randint(100_000, 1_000_000)) for s in L1_SYMBOLS}
        caps.update({(s, day.date()): floor_to_lot(v * D(str(L1_VOLUME_SHARE))) for s, v in volumes.items()})
        px = {s: (p * D(str(1 + rng.uniform(-0.03, 0.03)))).quantize(D("0.01")) for s, p in px.items()}
        market = market_at(dict(px), fill_time, volumes)
        if broker is None:
            broker = PaperBroker(db, name, market, CostModel(), initial, max_volume_share=L1_VOLUME_SHARE)
            om = OrderManager(db, broker, aid, limits)
        broker.set_market(market)                     # expires the earlier sessions' day orders at the venue
        if rng.random() < 0.7: om.sync_open()         # ... and sometimes the ledger learns it only later
        new_state = rng.choices(["active", "reducing", "halted"], [0.8, 0.1, 0.1])[0]
        if new_state != state:
            state = ledger.set_trading_state(db, aid, new_state, "test-l1", f"session {day.date()}")
        intents = []
        for k in range(L1_ORDERS // L1_SESSIONS):
            sym = L1_UNTRADABLE if rng.random() < 0.03 else rng.choice(L1_SYMBOLS)
            r = rng.random()
            qty = (D(0) if r < 0.02 else D(-rng.randint(1, 100)) if r < 0.04 else D(10) ** 12 if r < 0.05
                   else D(rng.randint(1, 2000)) / 4 if r < 0.15 else D(rng.randint(1, 600)))
            ref = px.get(sym, D(50))
            limit = (ref * D(str(1 + rng.uniform(-0.02, 0.02)))).quantize(D("0.01")) if rng.random() < 0.4 else None
            intents.append(Order(client_order_id(name, f"l{k}", day, sym), sym, rng.choice([Side.BUY, Side.SELL]), qty, limit_price=limit))
        ledger.store_intents(db, aid, "load", day, {}, {}, intents, px, "paper")
        for j, o in enumerate(intents):
            r = rng.random()
            price = (float("nan") if r < 0.02 else None if r < 0.03 else float("inf") if r < 0.035 else D(0) if r < 0.045
                     else D(-1) if r < 0.05 else px.get(o.symbol, D(50)))
            if j % 4 == 0:                                           # the ledger's view, refreshed every few orders
                pos = ledger.get_positions(db, aid)
                cash = ledger.account_cash(db, aid)
                equity = cash + sum((p.quantity * px[s] for s, p in pos.items()), D(0))
            held = pos[o.symbol].quantity if o.symbol in pos else D(0)
            tradable = o.symbol in px or rng.random() < 0.5          # else the venue itself refuses it
            done, sent = om.place(o.client_order_id, OrderContext(price, equity, held, rng.random() > 0.03, tradable, cash))
            assert done.status is not S.NEW and sent is (done.status is not S.DENIED)
            if j % 50 == 49:                                         # now and then during the session:
                px = {s: (p * D(str(1 + rng.uniform(-0.01, 0.01)))).quantize(D("0.01")) for s, p in px.items()}
                broker.set_market(PaperMarket(dict(px), fill_time, market.session, volumes))   # prices move: limits may fill
                t = schema.orders
                open_now = sorted(r["client_order_id"] for r in table(db, t, t.c.account_id == aid, t.c.as_of == day.date(),
                                                                      t.c.status.in_([s.value for s in OPEN])))
                for coid in rng.sample(open_now, min(len(open_now), rng.randint(0, 3))):       # a few cancels
                    assert om.cancel(coid).status in (S.CANCELED, S.FILLED)
                if rng.random() < 0.3: om.sync_open()
    broker.set_market(market_at(dict(px), days[-1] + pd.Timedelta(hours=21)))     # the last session change
    om.sync_open()

    orders = ledger.orders_for(db, aid)
    assert len(orders) == L1_ORDERS
    assert len({o.client_order_id for o in orders}) == L1_ORDERS
    assert all(o.status in TERMINAL for o in orders), {o.status for o in orders} - TERMINAL
    venue = {r["client_order_id"]: r for r in table(db, paper.paper_orders, paper.paper_orders.c.account == name)}
    local = {o.client_order_id: o for o in orders}
    assert set(venue) <= set(local)
    for coid, r in venue.items():                   # the ledger and the venue agree order by order
        o = local[coid]
        assert (o.status.value, o.filled_quantity, o.broker_order_id) == (r["status"], r["filled_quantity"], r["broker_order_id"])
    assert all(o.broker_order_id is None for c, o in local.items() if c not in venue)
    filled = defaultdict(D)
    for f in broker.fills(): filled[(f.symbol, f.timestamp.tz_convert("America/New_York").date())] += f.quantity
    assert all(q <= caps[k] for k, q in filled.items()), "the volume cap was exceeded"
    assert_ledger(db, aid, broker)
    out = {"ids": sorted(local), "statuses": defaultdict(int), "codes": sorted({r["code"] for r in table(db, schema.risk_denials)}),
           "partial_expired": sum(o.status is S.EXPIRED and 0 < o.filled_quantity < o.quantity for o in orders),
           "limit_filled": sum(o.limit_price is not None and o.status is S.FILLED for o in orders)}
    for o in orders: out["statuses"][o.status.value] += 1
    db.dispose()
    return out


def test_l1_ten_thousand_random_orders_reach_terminal_states(tmp_path):
    """10,000 random market and limit orders (random sides and sizes, bad prices, closed markets, kill-switch
    states, untradable symbols, cancels, volume-capped partial fills, intraday price moves, session changes that
    expire day orders) through OrderManager + PaperBroker, in 10 accounts of 1,000 run in parallel processes:
    after the last session change and a sync every order is terminal, client order ids are unique, the ledger
    agrees with the venue order by order, the volume cap held, and each account passes `assert_ledger`."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    urls = [f"sqlite:///{tmp_path / f'l1-{seed}.db'}" for seed in L1_SEEDS]
    with ProcessPoolExecutor(L1_WORKERS, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(l1_random_orders, L1_SEEDS, urls))
    ids = [i for r in results for i in r["ids"]]
    assert len(ids) == len(set(ids)) == 10_000
    statuses = defaultdict(int)
    for r in results:
        for k, v in r["statuses"].items(): statuses[k] += v
    assert sum(statuses.values()) == 10_000 and set(statuses) <= {s.value for s in TERMINAL}
    assert all(statuses[s.value] > 100 for s in (S.FILLED, S.DENIED, S.EXPIRED)), dict(statuses)
    assert all(statuses[s.value] > 10 for s in (S.REJECTED, S.CANCELED)), dict(statuses)
    assert sum(r["partial_expired"] for r in results) > 10 and sum(r["limit_filled"] for r in results) > 10
    codes = set().union(*(r["codes"] for r in results))
    assert {"NON_FINITE", "PRICE_NOT_POSITIVE", "QUANTITY_NOT_POSITIVE", "MARKET_CLOSED", "INSTRUMENT_NOT_TRADABLE",
            "ORDER_NOTIONAL_LIMIT", "POSITION_LIMIT", "TRADING_HALTED", "REDUCE_ONLY"} <= codes, codes


def test_l1_volume_cap_holds_across_price_updates_within_a_session(db):
    """max_volume_share of the session's volume is the most a symbol may fill in that session, however many
    times the market is updated within it."""
    vol = {"AAPL": D(1000)}
    b = PaperBroker(db, "cap", market_at(dict(PRICES), pd.Timestamp("2022-12-28 19:00", tz="UTC"), vol), CostModel(), CASH,
                    max_volume_share=0.1)
    aid = ledger.ensure_account(db, "cap", "paper", CASH)
    o = intent(db, aid, "cap", "AAPL", Side.BUY, D(300))
    om = OrderManager(db, b, aid, LIMITS)
    assert om.place(o.client_order_id, context(db, aid, "AAPL", PRICES["AAPL"]))[0].filled_quantity == 100
    b.set_market(market_at(dict(PRICES), pd.Timestamp("2022-12-28 20:00", tz="UTC"), vol))   # same session, later
    assert om.sync(o.client_order_id).filled_quantity == 100
    assert_ledger(db, aid, b)


def ledger_rows(engine, aid) -> tuple:
    "Everything an order event may change in account `aid`'s ledger."
    return (table(engine, schema.orders, schema.orders.c.account_id == aid), table(engine, schema.fills, schema.fills.c.account_id == aid),
            table(engine, schema.positions, schema.positions.c.account_id == aid), table(engine, schema.accounts, schema.accounts.c.id == aid))


STATUS_EVENTS = st.tuples(st.just("status"), st.sampled_from(list(OrderStatus)))
FILL_EVENTS = st.tuples(st.just("fill"), st.integers(1, 12), st.sampled_from(["99.5", "100", "100.25"]))
L4_EVENTS = st.one_of(STATUS_EVENTS, FILL_EVENTS,
                      st.tuples(st.just("again"), st.integers(0, 20)),     # an execution delivered a second time
                      st.tuples(st.just("foreign"), st.integers(1, 3)))    # a fill of the other side: not this order's


@hsettings(max_examples=120, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(qty=st.integers(1, 10), side=st.sampled_from([Side.BUY, Side.SELL]), events=st.lists(L4_EVENTS, max_size=14))
def test_l4_order_state_machine_under_random_event_sequences(db, qty, side, events):
    """Random status changes and fills: an illegal transition raises InvalidTransition (in memory and in the
    store, which then changes nothing); filled <= quantity always; FILLED, REJECTED and DENIED never change;
    CANCELED and EXPIRED change only by a late fill (staying put, or completing to FILLED); a fill delivered twice
    is recorded once; the store always holds what the in-memory state machine says."""
    assert all(TRANSITIONS[t] <= {S.FILLED} for t in TERMINAL)                  # the table protects terminal states
    assert {t for t in TERMINAL if TRANSITIONS[t]} == {S.CANCELED, S.EXPIRED}    # ... except for a late fill
    assert S.REJECTED not in TRANSITIONS[S.NEW] and S.UNKNOWN in TRANSITIONS[S.SUBMITTED]   # ambiguous is not failed
    account = f"l4-{os.urandom(4).hex()}"
    aid = ledger.ensure_account(db, account, "paper", CASH)
    model = intent(db, aid, account, "AAPL", side, D(qty))
    broker, done = ScriptedBroker(), []
    for n, ev in enumerate(events):
        before = model
        if ev[0] == "status":
            target = ev[1]
            try: nxt = model.with_status(target)
            except InvalidTransition: nxt = None
            assert (nxt is None) == (target not in TRANSITIONS[model.status])
            if target in (S.PARTIALLY_FILLED, S.FILLED) or target is model.status or (target is S.UNKNOWN and model.filled_quantity):
                continue        # only fills move the ledger there; same status is a re-save; see test_l4_..._keeps_its_fills
            snap = ledger_rows(db, aid)
            if nxt is None:
                with pytest.raises(InvalidTransition):
                    ledger.save_order(db, dataclasses.replace(model, status=target))
                assert ledger_rows(db, aid) == snap
            else:
                model = ledger.save_order(db, nxt)
        elif ev[0] in ("fill", "foreign"):
            q = D(ev[1])
            f_side = side if ev[0] == "fill" else (Side.SELL if side is Side.BUY else Side.BUY)
            f = Fill(f"{account}-x{n}", model.client_order_id, "AAPL", f_side, q, D(ev[2]) if ev[0] == "fill" else D(100), D("0.1"), CLOSE)
            try: nxt = model.with_fill(f)
            except InvalidTransition: nxt = None
            overfill = model.filled_quantity + q > model.quantity
            assert (nxt is None) == (ev[0] == "foreign" or overfill or model.status in (S.NEW, S.DENIED, S.REJECTED, S.FILLED))
            snap = ledger_rows(db, aid)
            if nxt is None:
                with pytest.raises(InvalidTransition):
                    ledger.record_fill(db, aid, f)
                assert ledger_rows(db, aid) == snap
            else:
                assert nxt.filled_quantity == model.filled_quantity + q
                assert (nxt.status is S.FILLED) == (nxt.filled_quantity == nxt.quantity)
                assert ledger.record_fill(db, aid, f) is True
                model = nxt
                done.append(f)
                broker.executions.append(f)
        else:                                             # the same execution again: recorded once
            if not done: continue
            snap = ledger_rows(db, aid)
            assert ledger.record_fill(db, aid, dataclasses.replace(done[ev[1] % len(done)], quantity=D(1))) is False
            assert ledger_rows(db, aid) == snap
        assert D(0) <= model.filled_quantity <= model.quantity
        assert model.filled_quantity >= before.filled_quantity
        if before.status in (S.FILLED, S.REJECTED, S.DENIED): assert model == before
        if before.status in (S.CANCELED, S.EXPIRED): assert model.status in (before.status, S.FILLED)
        stored = ledger.get_order(db, model.client_order_id)
        assert (stored.status, stored.filled_quantity, stored.average_price) == (model.status, model.filled_quantity, model.average_price)
    if model.status not in (S.NEW, S.DENIED):             # the broker's view of what it was sent
        remote = S.ACCEPTED if model.status in (S.SUBMITTED, S.UNKNOWN) and model.filled_quantity == 0 else \
                 S.PARTIALLY_FILLED if model.status in (S.SUBMITTED, S.UNKNOWN) else model.status
        broker.orders[model.client_order_id] = dataclasses.replace(model, status=remote)
    assert_ledger(db, aid, broker)


def test_l4_sync_of_an_unknown_order_keeps_its_fills(db):
    """An order that had a fill and then became UNKNOWN (a legal transition) is settled by a sync as what it is:
    PARTIALLY_FILLED, not ACCEPTED with a fill."""
    broker = ScriptedBroker()
    aid = ledger.ensure_account(db, "l4u", "paper", CASH)
    o = intent(db, aid, "l4u", "AAPL", Side.BUY, D(10))
    om = OrderManager(db, broker, aid, LIMITS)
    om.place(o.client_order_id, context(db, aid, "AAPL", PRICES["AAPL"]))
    broker.execute(o.client_order_id, 4, "129.90")
    assert om.sync(o.client_order_id).status is S.PARTIALLY_FILLED
    ledger.save_order(db, ledger.get_order(db, o.client_order_id).with_status(S.UNKNOWN))
    synced = om.sync(o.client_order_id)
    assert (synced.status, synced.filled_quantity) == (S.PARTIALLY_FILLED, 4)
    assert_ledger(db, aid, broker)


# ---------------------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------------------

SCENARIO = f'''
import os, signal, sys
from decimal import Decimal
import pandas as pd
from traderbot.store import database, ledger
from traderbot.brokers.paper import PaperBroker, market_at
from traderbot.core import CostModel
from traderbot.execution.manager import rebalance
from traderbot.risk.gate import RiskLimits

ACCOUNT, STRATEGY = "default", "momentum"
AS_OF, CLOSE = pd.Timestamp("{DAY}"), pd.Timestamp("{CLOSE}")
PRICES = {PRICES!r}
WEIGHTS = pd.Series({WEIGHTS.to_dict()!r})
CASH = Decimal({int(CASH)})

def broker(engine, close=CLOSE):
    b = PaperBroker(engine, ACCOUNT, market_at(dict(PRICES), close), CostModel(), CASH)
    b.set_market(b.market)
    return b

def run(url):
    "The daily rebalance: the same call in the child that is killed and in the restart."
    engine = database.open_store(url)
    b = broker(engine)
    return engine, b, rebalance(engine, b, ACCOUNT, STRATEGY, AS_OF, WEIGHTS, PRICES, RiskLimits(0.25, Decimal(300000)),
                                True, CASH, cost=CostModel())
'''

KILLER = '''
def die(): os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[2]
if point == "after_intents":        # the intents are committed; nothing was sent yet
    real_store = ledger.store_intents
    def store_intents(*a, **k):
        real_store(*a, **k)
        die()
    ledger.store_intents = store_intents
elif point == "before_send":        # the first order is stored SUBMITTED; the broker call never happens
    PaperBroker.submit = lambda self, order: die()
elif point == "after_accept":       # the venue booked (and filled) the first order; its answer is never stored
    real_submit = PaperBroker.submit
    def submit(self, order):
        real_submit(self, order)
        die()
    PaperBroker.submit = submit
run(sys.argv[1])
print("the child was not killed")
sys.exit(3)
'''


def scenario() -> dict:
    "The child's scenario, loaded here for the restart: the very same call."
    ns: dict = {}
    exec(SCENARIO, ns)
    return ns


def killed_child(tmp_path, point) -> tuple[str, object, int]:
    "Run the daily rebalance in a child that SIGKILLs itself at `point`; returns the store URL, engine and account id."
    url = f"sqlite:///{tmp_path / 'traderbot.db'}"
    script = tmp_path / "child.py"
    script.write_text(SCENARIO + KILLER)
    r = subprocess.run([sys.executable, str(script), url, point], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stdout, r.stderr)
    eng = database.open_store(url)
    return url, eng, ledger.account_id(eng, "default")


@pytest.mark.parametrize("point", ["after_intents", "before_send"])
def test_f1_killed_after_intent_before_send_sends_once(tmp_path, point):
    """Killed with the intents committed but before (or just as) the first broker call: the restart sends each
    order exactly once, with the client order id stored before the crash; a second restart sends nothing."""
    url, eng, aid = killed_child(tmp_path, point)
    stored = ledger.orders_for(eng, aid)
    ids = [o.client_order_id for o in stored]
    assert len(ids) == len(WEIGHTS) and all(ID_PATTERN.fullmatch(i) for i in ids)
    expect = [S.NEW] * len(ids) if point == "after_intents" else [S.SUBMITTED] + [S.NEW] * (len(ids) - 1)
    assert [o.status for o in stored] == expect
    assert table(eng, "paper_orders") == []                                   # the venue never saw anything
    ns = scenario()
    _, broker, res = ns["run"](url)                                           # the restart
    assert (res.planned, res.sent, res.filled) == (len(ids), len(ids), len(ids))
    after = ledger.orders_for(eng, aid)
    assert [o.client_order_id for o in after] == ids and all(o.status is S.FILLED for o in after)
    venue = table(eng, "paper_orders")
    assert sorted(r["client_order_id"] for r in venue) == sorted(ids)         # one venue order per id: sent once
    assert {o.broker_order_id for o in after} == {r["broker_order_id"] for r in venue}
    _, _, again = ns["run"](url)                                              # and a second restart sends nothing
    assert again.sent == 0 and again.resumed and len(table(eng, "paper_orders")) == len(ids)
    assert_ledger(eng, aid, broker)


@pytest.mark.parametrize("restart", ["reconcile_then_rebalance", "rebalance_only"])
def test_f2_killed_after_broker_accepted_adopts_the_order(tmp_path, restart):
    """Killed after the venue booked and filled the first order but before its answer was stored: the restart
    (reconciling first, as the daily run does, or straight into the rebalance) adopts the venue's order and
    fills under the same id instead of resubmitting; the other orders are sent once."""
    url, eng, aid = killed_child(tmp_path, "after_accept")
    stored = ledger.orders_for(eng, aid)
    first = stored[0]
    assert first.status is S.SUBMITTED and first.broker_order_id is None and all(o.status is S.NEW for o in stored[1:])
    venue = table(eng, "paper_orders")
    assert [(r["client_order_id"], r["status"]) for r in venue] == [(first.client_order_id, "filled")]
    venue_fills = [f["execution_id"] for f in table(eng, "paper_fills")]
    assert venue_fills and table(eng, "fills") == []                          # the ledger has not heard of them
    ns = scenario()
    if restart == "reconcile_then_rebalance":
        rec = reconcile(eng, ns["broker"](eng), aid)
        assert rec.status == "clean"                                          # the venue's order was adopted, not overwritten
        adopted = ledger.get_order(eng, first.client_order_id)
        assert adopted.status is S.FILLED and adopted.broker_order_id == venue[0]["broker_order_id"]
    _, broker, res = ns["run"](url)
    assert res.sent == len(stored) - 1 and res.filled == len(stored)
    venue = table(eng, "paper_orders")
    assert sorted(r["client_order_id"] for r in venue) == sorted(o.client_order_id for o in stored)   # no resubmit
    local = ledger.get_order(eng, first.client_order_id)
    assert (local.status, local.filled_quantity) == (S.FILLED, first.quantity)
    assert [f["execution_id"] for f in table(eng, "fills", schema.fills.c.client_order_id == first.client_order_id)] == venue_fills
    assert_ledger(eng, aid, broker)


def test_f1_unsent_order_of_an_earlier_session_is_settled_by_reconcile(db):
    """The state F1's kill leaves (an order stored SUBMITTED, never at the broker), restarted on the next session:
    the start-up reconciliation must settle it (it can no longer be sent: at most once) instead of leaving it open."""
    aid = ledger.ensure_account(db, "default", "paper", CASH)
    o = intent(db, aid, "default", "AAPL", Side.BUY, D(10), strategy="momentum")
    ledger.save_order(db, o.with_status(S.SUBMITTED))
    nxt = paper_broker(db, "default", PRICES, at=pd.Timestamp("2022-12-29 21:00", tz="UTC"))
    reconcile(db, nxt, aid)
    assert ledger.get_order(db, o.client_order_id).status not in (S.SUBMITTED, S.UNKNOWN)
    assert table(db, "paper_orders") == []
    assert_ledger(db, aid, nxt)


def test_f4_partial_fill_cancel_late_fill_and_duplicate_fill_change_position_once(db):
    """A partial fill, a cancel, then a late fill after the cancel, with every execution delivered twice: each
    changes position and cash exactly once; the late fill completes the cancelled order to FILLED."""
    broker = ScriptedBroker()
    aid = ledger.ensure_account(db, "f4", "paper", CASH)
    o = intent(db, aid, "f4", "AAPL", Side.BUY, D(100), ref=PRICES["AAPL"])
    om = OrderManager(db, broker, aid, LIMITS)
    placed, sent = om.place(o.client_order_id, context(db, aid, "AAPL", PRICES["AAPL"]))
    assert sent and placed.status is S.ACCEPTED
    f1 = broker.execute(o.client_order_id, 40, "129.90")
    broker.deliver_twice = True                                       # the broker reports each execution twice
    assert om.sync(o.client_order_id).filled_quantity == 40
    assert om.sync(o.client_order_id).filled_quantity == 40
    assert ledger.record_fill(db, aid, f1) is False                    # ... and a fill stream delivers it again
    assert ledger.get_positions(db, aid)["AAPL"].quantity == 40
    cancelled = om.cancel(o.client_order_id)
    assert (cancelled.status, cancelled.filled_quantity) == (S.CANCELED, 40)
    late = broker.execute(o.client_order_id, 60, "130.10")            # the late fill after the cancel
    assert ledger.record_fill(db, aid, late) is True
    assert ledger.record_fill(db, aid, late) is False
    assert ledger.record_fill(db, aid, dataclasses.replace(late, quantity=D(1))) is False   # same execution id, garbled
    final = ledger.get_order(db, o.client_order_id)
    assert (final.status, final.filled_quantity) == (S.FILLED, 100)
    assert ledger.get_positions(db, aid)["AAPL"].quantity == 100
    assert ledger.account_cash(db, aid) == CASH + f1.cash_flow + late.cash_flow
    assert len(table(db, "fills")) == 2
    assert_ledger(db, aid, broker)


def test_f4_late_fill_after_cancel_is_recorded_by_the_next_reconciliation(db):
    """The late fill is not pushed to the ledger by a fill stream: the next reconciliation finds it at the broker
    and records it as a fill (not by overwriting position and cash): the order completes to FILLED, clean."""
    broker = ScriptedBroker()
    aid = ledger.ensure_account(db, "f4b", "paper", CASH)
    o = intent(db, aid, "f4b", "AAPL", Side.BUY, D(100), ref=PRICES["AAPL"])
    om = OrderManager(db, broker, aid, LIMITS)
    om.place(o.client_order_id, context(db, aid, "AAPL", PRICES["AAPL"]))
    broker.execute(o.client_order_id, 40, "129.90")
    assert om.sync(o.client_order_id).filled_quantity == 40
    assert om.cancel(o.client_order_id).status is S.CANCELED
    broker.execute(o.client_order_id, 60, "130.10")                   # late fill; the broker says FILLED now
    om.sync_open()
    rec = reconcile(db, broker, aid)
    final = ledger.get_order(db, o.client_order_id)
    assert (final.status, final.filled_quantity) == (S.FILLED, 100)
    assert rec.status == "clean"
    assert_ledger(db, aid, broker)


def traded_yesterday(db) -> tuple[int, Order]:
    "Account 'default' after a rebalance on 2022-12-27, plus a limit order left working at the venue."
    yday, yclose = pd.Timestamp("2022-12-27", tz="UTC"), pd.Timestamp("2022-12-27 21:00", tz="UTC")
    b = paper_broker(db, "default", PRICES, at=yclose)
    res = rebalance(db, b, "default", "momentum", yday, WEIGHTS, PRICES, LIMITS, True, CASH, cost=CostModel())
    assert res.filled == len(WEIGHTS)
    aid = ledger.account_id(db, "default")
    lo = intent(db, aid, "default", "JPM", Side.BUY, D(10), strategy="manual", as_of=yday, limit_price=D("1.00"))
    assert OrderManager(db, b, aid, LIMITS).place(lo.client_order_id, context(db, aid, "JPM", PRICES["JPM"]))[0].status is S.ACCEPTED
    return aid, lo


def raiser(error):
    def fail(*a, **k): raise error
    return fail


@pytest.mark.parametrize("query, error", [
    ("positions", BrokerError("503 Service Unavailable", retryable=True)),
    ("account", BrokerError("401 Unauthorized")),
    ("open_orders", BrokerError("read timed out", retryable=True)),
    ("positions", ConnectionError("connection refused")),
    ("get_order", BrokerError("504 Gateway Timeout", retryable=True)),
    pytest.param("get_order", TimeoutError("read timed out")),
])
def test_f7_broker_query_fails_at_startup_trading_does_not_start(db, monkeypatch, query, error):
    """A broker query fails during the start-up reconciliation of the daily trade: BrokerError saying trading
    does not start, a 'failed' reconciliation row with the error, the rebalance is never reached (no order, no
    venue order), and the failed query is not read as 'flat' (positions and cash unchanged)."""
    from traderbot import daily
    from traderbot.config import load_settings
    aid, working = traded_yesterday(db)
    before = ledger_rows(db, aid)
    n_venue = len(table(db, "paper_orders"))
    broker = paper_broker(db, "default", PRICES, at=CLOSE)            # the venue moved to today (the limit order expired)
    setattr(broker, query, raiser(error))
    monkeypatch.setattr(daily, "make_broker", lambda *a, **k: broker)
    reached = []
    monkeypatch.setattr(daily, "rebalance", lambda *a, **k: reached.append(1))
    cfg = load_settings(ROOT / "settings.ini", env={"TRADERBOT__STORE__URL": str(db.url)})
    closes = pd.DataFrame([{s: float(p) for s, p in PRICES.items()}] * 2,
                          index=pd.DatetimeIndex([pd.Timestamp("2022-12-27", tz="UTC"), DAY]))
    with pytest.raises(BrokerError, match="trading does not start") as e:
        daily.trade_daily(db, cfg, closes, DAY, None)
    assert broker.name in str(e.value) and str(error) in str(e.value)
    recs = table(db, "reconciliations")
    assert [r["status"] for r in recs] == ["failed"] and str(error) in recs[0]["error"]
    assert reached == [] and ledger.orders_for(db, aid, DAY) == []
    assert len(table(db, "paper_orders")) == n_venue
    after = ledger_rows(db, aid)
    assert after[1:] == before[1:]                                    # fills, positions, cash: nothing read as flat
    assert_ledger(db, aid, paper_broker(db, "default", PRICES, at=CLOSE))


def closed_outside(db) -> tuple[int, PaperBroker, D]:
    "Account 'default' traded on 2022-12-27; overnight its AAPL position was sold at the broker, outside traderbot."
    aid, working = traded_yesterday(db)
    om = OrderManager(db, paper_broker(db, "default", PRICES, at=CLOSE), aid, LIMITS)
    assert om.sync(working.client_order_id).status is S.EXPIRED          # yesterday's day order expired overnight
    held = ledger.get_positions(db, aid)["AAPL"].quantity
    broker = paper_broker(db, "default", PRICES, at=CLOSE)
    outside = broker.submit(Order("manual-close-aapl", "AAPL", Side.SELL, held))   # e.g. from the broker's own app
    assert outside.status is S.FILLED
    assert ledger_differences(db, aid, broker) == {"AAPL": (held, D(0))}
    return aid, broker, held


def test_f8_position_closed_outside_is_adopted_and_rebalance_buys_once(db):
    """The ledger holds AAPL that was sold outside traderbot: reconcile (policy adopt) reports the difference and
    takes the broker's positions and cash; the rebalance to the same target then buys AAPL once, and the account
    ends with one AAPL position at the target size (never the old one plus a new one)."""
    aid, broker, held = closed_outside(db)
    rec = reconcile(db, broker, aid, policy="adopt")
    assert rec.status == "adjusted" and rec.differences["positions"] == {"AAPL": (held, D(0))}
    assert rec.differences["cash"] is not None and any("AAPL" in a for a in rec.actions)
    row = table(db, "reconciliations")[-1]
    assert row["status"] == "adjusted" and row["differences"]["positions"] == {"AAPL": [str(held), "0"]}
    assert "AAPL" not in ledger.get_positions(db, aid) and ledger_differences(db, aid, broker) == {}
    assert ledger.account_cash(db, aid) == broker_cash(broker)
    res = rebalance(db, broker, "default", "momentum", DAY, WEIGHTS, PRICES, LIMITS, True, CASH, cost=CostModel())
    buys = [o for o in res.orders if o.symbol == "AAPL"]
    assert len(buys) == 1 and buys[0].side is Side.BUY and buys[0].status is S.FILLED
    mine = ledger.get_positions(db, aid)["AAPL"].quantity
    theirs = {p.symbol: p.quantity for p in broker.positions()}["AAPL"]
    assert mine == theirs == buys[0].quantity                          # one position, bought once
    assert mine * PRICES["AAPL"] <= D("0.2") * D(str(res.equity)) * D("1.001")
    again = rebalance(db, broker, "default", "momentum", DAY, WEIGHTS, PRICES, LIMITS, True, CASH, cost=CostModel())
    assert again.sent == 0 and ledger.get_positions(db, aid)["AAPL"].quantity == mine
    assert_ledger(db, aid, broker)


def test_f8_position_differs_with_policy_halt_halts_and_changes_nothing(db):
    """The same difference under policy halt: the account is halted (with the reason recorded), the ledger is
    left exactly as it was, and the rebalance that follows sends nothing (TRADING_HALTED)."""
    aid, broker, held = closed_outside(db)
    before = ledger_rows(db, aid)
    n_venue = len(table(db, "paper_orders"))
    rec = reconcile(db, broker, aid, policy="halt")
    assert rec.status == "halted" and rec.differences["positions"] == {"AAPL": (held, D(0))}
    assert ledger.trading_state(db, aid) == "halted"
    assert "reconciliation" in ledger.trading_state_history(db, aid).actor.tolist()
    assert ledger_rows(db, aid) == before
    res = rebalance(db, broker, "default", "momentum", DAY, WEIGHTS, PRICES, LIMITS, True, CASH, cost=CostModel())
    assert res.sent == 0 and all(o.status is S.DENIED and o.reason.startswith("TRADING_HALTED") for o in res.orders)
    assert len(table(db, "paper_orders")) == n_venue
    assert ledger_rows(db, aid)[1:] == before[1:]
    assert_ledger(db, aid, broker)


def cli(env, *args, cwd=ROOT, timeout=300):
    return subprocess.run([*TRADERBOT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADERBOT") and k not in CANARIES}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def test_f9_cell_fails_after_the_order_step_rerun_sends_nothing_twice(tmp_path):
    """A copy of the daily pipeline with a cell after the order step that fails: the run exits 1 and is recorded
    failed with the cell's error, its output notebook (with the error and the orders) is kept; the same run
    started again sends nothing (0 sent now, resumed), and the failed run's record and notebook survive it."""
    import nbformat
    pipelines = tmp_path / "nbs" / "pipelines"
    pipelines.mkdir(parents=True)
    nb = nbformat.read(ROOT / "nbs" / "pipelines" / "daily.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "trade_daily(" in c.source and c.cell_type == "code")
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        'import os\nif os.environ.get("RELIABILITY_FAIL_AFTER_ORDERS") == "1":\n'
        '    raise RuntimeError("injected failure after the order step")'))
    nbformat.write(nb, pipelines / "daily.ipynb")
    (tmp_path / "settings.ini").write_text((ROOT / "settings.ini").read_text())
    url = f"sqlite:///{tmp_path / 'traderbot.db'}"
    env = clean_env(TRADERBOT_SETTINGS=str(tmp_path / "settings.ini"), TRADERBOT__STORE__URL=url,
                    TRADERBOT__DATA__PATH=str(ROOT / "data" / "sample"), TRADERBOT__PIPELINE__REPORTS_DIR=str(tmp_path / "reports"))
    args = ("--settings", str(tmp_path / "settings.ini"), "run", "daily", "-p", "as_of=2022-12-28")

    first = cli({**env, "RELIABILITY_FAIL_AFTER_ORDERS": "1"}, *args, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "injected failure after the order step" in first.stderr
    eng = database.connect(url)
    aid = ledger.account_id(eng, "default")
    run1 = runs_frame(eng).iloc[0]
    assert run1.status == "failed" and "RuntimeError" in run1.error and "injected failure" in run1.error
    failed_nb = Path(run1.html_path).with_suffix(".ipynb")
    assert failed_nb.exists() and Path(run1.html_path).exists() and failed_nb.parent == tmp_path / "reports" / "daily"
    kept = failed_nb.read_text()
    assert "injected failure after the order step" in kept
    orders = ledger.orders_for(eng, aid)
    assert orders and all(o.status is S.FILLED for o in orders)
    assert get_run(eng, run1.run_id)["summary"]["sent"] == len(orders)     # the order step had finished
    venue = table(eng, "paper_orders")
    assert sorted(r["client_order_id"] for r in venue) == sorted(o.client_order_id for o in orders)

    second = cli(env, *args, cwd=tmp_path)                            # the same run, started again
    assert second.returncode == 0, second.stderr
    assert "0 sent now" in second.stdout and "resumed" in second.stdout
    runs = runs_frame(eng).sort_values("started_at")
    assert runs.status.tolist() == ["failed", "succeeded"] and runs.run_id.iloc[0] == run1.run_id
    assert get_run(eng, runs.run_id.iloc[1])["summary"]["sent"] == 0
    assert len(table(eng, "paper_orders")) == len(venue) and len(table(eng, "fills")) == len(table(eng, "paper_fills"))
    assert [o.client_order_id for o in ledger.orders_for(eng, aid)] == [o.client_order_id for o in orders]
    assert failed_nb.exists() and failed_nb.read_text() == kept      # the failed run's notebook is kept as it was
    assert_ledger(eng, aid, PaperBroker(eng, "default", market_at({}, CLOSE)))


# ---------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------

def gate(db, account, cases, broker=None) -> tuple[int, PaperBroker]:
    """Place one stored intent per case `(symbol, side, qty, ctx_changes, expected code or None)` through the
    OrderManager; assert each denied one is DENIED with its code (and a risk_denials row) and never sent."""
    aid = ledger.ensure_account(db, account, "paper", CASH)
    broker = broker or paper_broker(db, account, PRICES)
    om = OrderManager(db, broker, aid, LIMITS)
    for k, (sym, side, qty, changes, code) in enumerate(cases):
        o = intent(db, aid, account, sym, side, qty, strategy=f"case{k}")
        ctx = dataclasses.replace(context(db, aid, sym, PRICES.get(sym, D(50))), **changes)
        done, sent = om.place(o.client_order_id, ctx)
        if code is None:
            assert sent and done.status is S.FILLED, (k, done)
        else:
            assert not sent and done.status is S.DENIED and done.reason.startswith(f"{code}: "), (k, code, done)
            assert sym in done.reason                                          # the message names the symbol
            assert [r["code"] for r in table(db, schema.risk_denials, schema.risk_denials.c.client_order_id == o.client_order_id)] == [code]
            assert broker.get_order(o.client_order_id) is None                 # never sent
    return aid, broker


def test_b1_nan_inf_none_price_or_signal_is_refused(db):
    """NaN, inf, None or text as the reference price (or NaN equity) is denied NON_FINITE by the gate and never
    sent; a NaN or inf target weight (signal) makes the rebalance refuse with a DataError naming the symbol
    before anything is stored."""
    bad = [float("nan"), float("inf"), float("-inf"), None, D("NaN"), D("Infinity"), "n/a"]
    cases = [("AAPL", Side.BUY, D(10), {"price": p}, "NON_FINITE") for p in bad]
    cases += [("MSFT", Side.BUY, D(10), {"equity": float("nan")}, "NON_FINITE"), ("XOM", Side.BUY, D(10), {}, None)]
    aid, broker = gate(db, "b1", cases)
    for k, w in enumerate([float("nan"), float("inf")]):
        acct = f"b1-signal-{k}"
        with pytest.raises(DataError, match="weight of MSFT"):
            rebalance(db, paper_broker(db, acct), acct, "momentum", DAY, pd.Series({"AAPL": 0.1, "MSFT": w}), PRICES, LIMITS, True, CASH)
        sid = ledger.account_id(db, acct)
        assert ledger.orders_for(db, sid) == [] and table(db, schema.signals, schema.signals.c.account_id == sid) == []
    assert table(db, paper.paper_orders, paper.paper_orders.c.account.like("b1-signal%")) == []
    assert_ledger(db, aid, broker)


def test_b2_price_not_positive_is_refused(db):
    """A reference price of zero or below is denied PRICE_NOT_POSITIVE and never sent; a fill at a price <= 0
    cannot even be constructed, so it can never reach the ledger."""
    cases = [("AAPL", Side.BUY, D(10), {"price": p}, "PRICE_NOT_POSITIVE") for p in (D(0), D("-0.01"), -5.0, 0)]
    cases += [("AAPL", Side.SELL, D(10), {"price": D(0)}, "PRICE_NOT_POSITIVE"), ("XOM", Side.BUY, D(10), {}, None)]
    aid, broker = gate(db, "b2", cases)
    for px in (0, "-1", D("-0.0001")):
        with pytest.raises(DataError, match="AAPL"):
            Fill("x-bad", "tb-20221228-AAPL-0000000000", "AAPL", Side.BUY, D(1), px, D(0), CLOSE)
    assert_ledger(db, aid, broker)


def test_b3_quantity_zero_negative_huge_or_over_a_limit_is_refused(db):
    """Quantity 0 or negative: QUANTITY_NOT_POSITIVE; 1e12: ORDER_NOTIONAL_LIMIT; within the notional limit but
    past the position weight: POSITION_LIMIT; more than the cash: INSUFFICIENT_CASH; none is sent. A float
    quantity is refused when the order is built; an order within every limit still goes through."""
    cases = [("AAPL", Side.BUY, D(0), {}, "QUANTITY_NOT_POSITIVE"), ("AAPL", Side.SELL, D(-5), {}, "QUANTITY_NOT_POSITIVE"),
             ("AAPL", Side.BUY, D(10) ** 12, {}, "ORDER_NOTIONAL_LIMIT"), ("AAPL", Side.SELL, D("1e12"), {}, "ORDER_NOTIONAL_LIMIT"),
             ("AAPL", Side.BUY, D(2000), {}, "POSITION_LIMIT"),                 # 259,860 <= 300,000 but 26% > 25%
             ("MSFT", Side.BUY, D(500), {"cash": D(100_000)}, "INSUFFICIENT_CASH"),
             ("AAPL", Side.BUY, D(1900), {}, None)]                             # 24.7%: allowed
    aid, broker = gate(db, "b3", cases)
    for q in (1e12, 10.0, 0.1 + 0.2):
        with pytest.raises(DataError, match="quantity must be a Decimal"):
            Order("tb-20221228-AAPL-0000000000", "AAPL", Side.BUY, q)
    assert ledger.get_positions(db, aid)["AAPL"].quantity == 1900
    assert_ledger(db, aid, broker)


def test_b4_float_quantities_become_exact_decimals_floored_to_the_lot(db):
    """0.1 + 0.2 becomes Decimal('0.30000000000000004') (its shortest repr, not the binary expansion); flooring
    to the lot rounds towards zero; a quantity that is zero after rounding is never planned, and denied if
    placed; a fractional quantity, price and commission survive the store and the venue exactly."""
    q = to_decimal(0.1 + 0.2, "quantity")
    assert q == D("0.30000000000000004") and q != D("0.3")
    assert floor_to_lot(q, D("0.01")) == D("0.30") and floor_to_lot(q, D("0.0001")) == D("0.3")
    assert floor_to_lot(q) == 0 and floor_to_lot(-q, D("0.1")) == D("-0.3")
    tiny = pd.Series({"AAPL": 0.0001})                                         # 100 of 1,000,000: under one share
    assert plan_orders(tiny, {}, PRICES, CASH, {"AAPL": "tb-20221228-AAPL-0000000000"}) == []
    frac = plan_orders(tiny, {}, PRICES, CASH, {"AAPL": "tb-20221228-AAPL-0000000000"}, lot=D("0.001"))
    assert [(o.side, o.quantity) for o in frac] == [(Side.BUY, D("0.769"))]
    aid, broker = gate(db, "b4", [("AAPL", Side.BUY, floor_to_lot(q), {}, "QUANTITY_NOT_POSITIVE")])
    o = intent(db, aid, "b4", "MSFT", Side.BUY, q, limit_price=D("239.999999999999999"))
    got = ledger.get_order(db, o.client_order_id)
    assert (got.quantity, got.limit_price) == (q, D("239.999999999999999"))     # exact round trip
    done, sent = OrderManager(db, broker, aid, LIMITS).place(o.client_order_id, context(db, aid, "MSFT", PRICES["MSFT"]))
    assert sent and done.status is S.FILLED and done.filled_quantity == q
    (f,) = [f for f in broker.fills() if f.client_order_id == o.client_order_id]
    assert f.quantity == q and f.price == PRICES["MSFT"] * D("1.0005") and f.commission == q * f.price * D("0.0005")
    stored = table(db, schema.fills, schema.fills.c.client_order_id == o.client_order_id)[0]
    assert (stored["quantity"], stored["price"], stored["commission"]) == (f.quantity, f.price, f.commission)
    assert ledger.get_positions(db, aid)["MSFT"].quantity == q
    assert ledger.account_cash(db, aid) == CASH + f.cash_flow
    assert_ledger(db, aid, broker)


def test_b7_unknown_or_untradable_symbol_is_refused(db):
    """Outside the tradable universe: denied INSTRUMENT_NOT_TRADABLE. Unknown to the venue: the venue refuses
    it and the order is REJECTED with that code, never booked. A stored intent whose symbol lost its price
    before the (re)run is denied, not sent. A malformed ticker cannot become an order at all."""
    aid, broker = gate(db, "b7", [("JPM", Side.BUY, D(10), {"tradable": False}, "INSTRUMENT_NOT_TRADABLE")])
    om = OrderManager(db, broker, aid, LIMITS)
    unknown = intent(db, aid, "b7", "ZZZZ", Side.BUY, D(10))
    done, sent = om.place(unknown.client_order_id, context(db, aid, "ZZZZ", D(50)))
    assert sent and done.status is S.REJECTED and "INSTRUMENT_NOT_TRADABLE" in done.reason
    assert broker.get_order(unknown.client_order_id) is None
    stale = Order(client_order_id("b7", "momentum", DAY, "JPM"), "JPM", Side.BUY, D(10))
    ledger.store_intents(db, aid, "momentum", DAY, {"JPM": 0.01}, {}, [stale], {"JPM": PRICES["JPM"]}, "paper")
    no_jpm = {s: p for s, p in PRICES.items() if s != "JPM"}
    res = rebalance(db, paper_broker(db, "b7", no_jpm), "b7", "momentum", DAY, pd.Series({"JPM": 0.01}), no_jpm, LIMITS, True, CASH)
    assert res.resumed is False and res.sent == 0 and [o.status for o in res.orders] == [S.DENIED]
    assert broker.get_order(stale.client_order_id) is None
    for bad in ("aapl", "ZZ ZZ", "../x", "АAPL"):                              # the last one starts with a Cyrillic A
        with pytest.raises(DataError, match="invalid symbol"):
            Order("tb-x", bad, Side.BUY, D(1))
    assert_ledger(db, aid, broker)


@pytest.mark.parametrize("weights, prices", [
    pytest.param(pd.Series({"AAPL": 0.1, "MSFT": float("nan")}), PRICES, id="signal-nan"),
    pytest.param(pd.Series({"MSFT": None}), PRICES, id="signal-none"),
    pytest.param(WEIGHTS, {**PRICES, "MSFT": D("NaN")}, id="price-nan"),
    pytest.param(WEIGHTS, {**PRICES, "MSFT": float("nan")}, id="price-float-nan"),
    pytest.param(WEIGHTS, {**PRICES, "MSFT": None}, id="price-none"),
    pytest.param(WEIGHTS, {**PRICES, "MSFT": D(0)}, id="price-zero"),
    pytest.param(WEIGHTS, {**PRICES, "MSFT": D(-5)}, id="price-negative"),
    pytest.param(pd.Series({"AAPL": 0.1, "MSFT": 0.1, "ZZZZ": 0.1}), {s: p for s, p in PRICES.items() if s != "ZZZZ"},
                 id="symbol-unpriced"),
])
def test_b1_b2_b7_rebalance_refuses_bad_prices_and_signals_naming_the_symbol(db, weights, prices):
    """Bad data handed straight to `rebalance` (not filtered by the pipeline's session_prices): a clear
    DataError (a TraderbotError, so the CLI shows one line) naming the symbol, and nothing stored or sent."""
    broker = paper_broker(db, "bad", PRICES)
    with pytest.raises(DataError, match="MSFT|ZZZZ"):
        rebalance(db, broker, "bad", "momentum", DAY, weights, prices, LIMITS, True, CASH)
    aid = ledger.account_id(db, "bad")
    assert ledger.orders_for(db, aid) == [] and table(db, schema.signals) == [] and table(db, paper.paper_orders) == []
    assert_ledger(db, aid, broker)


def test_b9_holiday_early_close_weekend(db):
    """A holiday (2022-12-26) and a weekend day (2022-12-24): resolve_as_of refuses them naming the date, and a
    rebalance told the market is closed denies every order MARKET_CLOSED and sends nothing. The early close
    (2022-11-25) is a session: trading is allowed and every fill is stamped at its 18:00 UTC close."""
    from traderbot.data.calendar import is_session, session_close
    from traderbot.data.calendar import resolve_as_of
    sessions = pd.DatetimeIndex(["2022-11-23", "2022-11-25", "2022-12-23", "2022-12-27", "2022-12-28"], tz="UTC")
    closes = pd.DataFrame([{s: float(p) for s, p in PRICES.items()}] * len(sessions), index=sessions)
    assert resolve_as_of(closes, "2022-11-25") == pd.Timestamp("2022-11-25", tz="UTC")
    for day in ("2022-12-26", "2022-12-24", "2022-12-25"):
        with pytest.raises(DataError, match=f"{day} is not a XNYS trading session"):
            resolve_as_of(closes, day)
        assert not is_session(day)
        acct = f"b9-closed-{day}"
        b = paper_broker(db, acct, PRICES, at=pd.Timestamp(f"{day} 21:00", tz="UTC"))
        res = rebalance(db, b, acct, "momentum", pd.Timestamp(day, tz="UTC"), WEIGHTS, PRICES, LIMITS, is_session(day), CASH)
        assert res.sent == 0 and res.planned == len(WEIGHTS)
        assert all(o.status is S.DENIED and o.reason.startswith("MARKET_CLOSED") for o in res.orders)
        assert table(db, paper.paper_orders, paper.paper_orders.c.account == acct) == []
        assert_ledger(db, ledger.account_id(db, acct), b)
    early = pd.Timestamp("2022-11-25", tz="UTC")
    close = session_close(early)
    assert is_session(early) and close == pd.Timestamp("2022-11-25 18:00", tz="UTC")
    b = paper_broker(db, "b9-early", PRICES, at=close)
    res = rebalance(db, b, "b9-early", "momentum", early, WEIGHTS, PRICES, LIMITS, is_session(early), CASH, cost=CostModel())
    assert res.sent == res.filled == len(WEIGHTS)
    aid = ledger.account_id(db, "b9-early")
    assert {f["timestamp"] for f in table(db, schema.fills, schema.fills.c.account_id == aid)} == {close}
    assert {f.timestamp for f in b.fills()} == {close}
    assert ledger.equity_curve(db, "b9-early").index.tolist() == [early]
    assert_ledger(db, aid, b)


# ---------------------------------------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------------------------------------

def test_s1_debug_run_with_canary_secrets_leaks_nothing(tmp_path):
    """`traderbot --debug run daily` with canary API keys in the environment: no canary in stdout, stderr, the
    saved notebook, the HTML report or any file of the store (WAL included); none in repr/str/JSON of the
    loaded settings, and none in a configuration error raised (and formatted as a traceback) while they are loaded."""
    from traderbot.config import load_settings
    from traderbot.core import ConfigError
    url = f"sqlite:///{tmp_path / 'traderbot.db'}"
    env = clean_env(**CANARIES, TRADERBOT_SETTINGS=str(ROOT / "settings.ini"), TRADERBOT__STORE__URL=url,
                    TRADERBOT__PIPELINE__REPORTS_DIR=str(tmp_path / "reports"))
    r = cli(env, "--debug", "run", "daily", "-p", "as_of=2022-12-28")
    assert r.returncode == 0, r.stderr
    assert "DEBUG" in r.stderr                                                  # it really ran at DEBUG
    places = {"stdout": r.stdout, "stderr": r.stderr}
    for f in tmp_path.rglob("*"):
        if f.is_file(): places[str(f.relative_to(tmp_path))] = f.read_bytes().decode("latin-1")
    assert any(k.endswith(".ipynb") for k in places) and any(k.endswith(".html") for k in places)
    assert any(k.startswith("traderbot.db") for k in places)
    cfg = load_settings(ROOT / "settings.ini", env={**CANARIES, "TRADERBOT__STORE__URL": url})
    assert cfg.secrets.alpaca_api_key.get_secret_value() == CANARIES["ALPACA_API_KEY"]   # loaded, so the check means something
    places.update({"repr(settings)": repr(cfg), "str(settings)": str(cfg), "settings JSON": cfg.model_dump_json(),
                   "repr(secrets)": repr(cfg.secrets), "repr(model_dump)": repr(cfg.model_dump())})
    with pytest.raises(ConfigError) as e:
        load_settings(ROOT / "settings.ini", env={**CANARIES, "TRADERBOT__STORE__URL": url, "TRADERBOT__RISK__MAX_POSITION_WEIGHT": "-1"})
    places["config error"] = repr(e.value) + "".join(traceback.format_exception(e.value))
    assert "max_position_weight" in places["config error"]
    for where, text in places.items():
        for secret in CANARIES.values():
            assert secret not in text, f"secret leaked into {where}"
    audit(url)


def test_s1_store_password_is_not_in_the_settings_repr():
    from traderbot.config import load_settings
    cfg = load_settings(ROOT / "settings.ini", env={"TRADERBOT__STORE__URL": "postgresql+psycopg://trader:canary-pw-5Tg8@127.0.0.1/tb"})
    assert "canary-pw-5Tg8" in cfg.store.url                                   # loaded
    for text in (repr(cfg), str(cfg), repr(cfg.store)):
        assert "canary-pw-5Tg8" not in text


def test_s1_misplaced_secret_is_not_echoed_in_the_config_error():
    from traderbot.config import load_settings
    from traderbot.core import ConfigError
    with pytest.raises(ConfigError, match="alpaca_secret_key") as e:
        load_settings(ROOT / "settings.ini", env={"TRADERBOT__BROKER__ALPACA_SECRET_KEY": CANARIES["ALPACA_SECRET_KEY"]})
    assert CANARIES["ALPACA_SECRET_KEY"] not in str(e.value)


# ---------------------------------------------------------------------------------------------------------
# F5, F6: the store refuses a write
# ---------------------------------------------------------------------------------------------------------

def test_f5_database_locked_longer_than_the_busy_timeout_fails_before_any_broker_call(tmp_path):
    """Another process holds the SQLite write lock past the busy timeout: the rebalance fails with a clear
    StorageError naming the lock, before the venue receives anything; once the lock is gone the same call trades."""
    from traderbot.core import StorageError
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    eng = database.open_store(url, busy_timeout_s=0.3)
    b = paper_broker(eng, "default", PRICES)
    holder = sa.create_engine(url).connect()
    holder.exec_driver_sql("BEGIN IMMEDIATE")                                  # the other writer
    try:
        with pytest.raises(StorageError, match="database is locked"):
            rebalance(eng, b, "default", "momentum", DAY, WEIGHTS, PRICES, LIMITS, True, CASH, cost=CostModel())
    finally:
        holder.rollback(); holder.close()
    assert table(eng, "paper_orders") == []                                    # no broker call happened
    res = rebalance(eng, b, "default", "momentum", DAY, WEIGHTS, PRICES, LIMITS, True, CASH, cost=CostModel())
    assert res.filled == len(WEIGHTS)
    assert_ledger(eng, ledger.account_id(eng, "default"), b)


def test_f6_a_ledger_write_refused_after_the_send_halts_and_sends_nothing_more(db, monkeypatch):
    """The ledger cannot store a fill the venue made (SQLite's 'database or disk is full'): the rebalance stops,
    nothing more reaches the venue, the account is halted with a critical alert, and the next reconciliation
    settles the order from the venue's book."""
    from traderbot.core import StorageError
    b = paper_broker(db, "default", PRICES)
    full = StorageError("store: OperationalError: database or disk is full")
    real = ledger.record_fill
    monkeypatch.setattr(ledger, "record_fill", lambda *a, **k: (_ for _ in ()).throw(full))
    with pytest.raises(StorageError, match="database or disk is full .*nothing more was sent; trading is halted"):
        rebalance(db, b, "default", "momentum", DAY, WEIGHTS, PRICES, LIMITS, True, CASH, cost=CostModel())
    aid = ledger.account_id(db, "default")
    assert len(table(db, "paper_orders")) == 1                                 # the first order reached the venue; nothing after it
    assert ledger.trading_state(db, aid) == "halted"
    assert [a["source"] for a in table(db, "alerts") if a["level"] == "critical"] == ["storage"]
    monkeypatch.setattr(ledger, "record_fill", real)                           # space again: the next start reconciles
    reconcile(db, b, aid)
    assert [o.status for o in ledger.orders_for(db, aid)][0] is S.FILLED
    assert_ledger(db, aid, b)


FULL_DISK = '''
import json
sys.path.insert(0, sys.argv[3])                         # the tests folder, for the ledger audit
from test_reliability import assert_ledger
from traderbot.core import StorageError
from traderbot.execution.manager import reconcile

mount = sys.argv[2]
url = f"sqlite:///{mount}/traderbot.db"
ballast = os.path.join(mount, "ballast")

def fill_the_disk():
    "Write zeros until the filesystem refuses even one more byte."
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
        try:
            while True: os.write(fd, bytes(chunk))
        except OSError: pass
    os.close(fd)

real_submit = PaperBroker.submit
def submit(self, order):                                 # the disk fills up once the venue holds the first order
    out = real_submit(self, order)
    if not os.path.exists(ballast): fill_the_disk()
    return out
PaperBroker.submit = submit

report = {"reserve_before": None}
engine = database.open_store(url)
database.keep_reserve(engine)
report["reserve_before"] = os.path.getsize(database.reserve_path(engine))
try:
    run(url)
    report["error"] = None
except StorageError as e:
    report["error"] = str(e)
aid = ledger.account_id(engine, ACCOUNT)
report["state"] = ledger.trading_state(engine, aid)
report["alerts"] = [(a.level, a.source) for a in ledger.alerts_frame(engine, ACCOUNT, limit=10).itertuples()]
report["ledger"] = [o.status.value for o in ledger.orders_for(engine, aid)]
with engine.connect() as con: report["venue"] = con.exec_driver_sql("select count(*) from paper_orders").scalar()
report["note"] = database.reserve_note(engine)
PaperBroker.submit = real_submit
os.remove(ballast)                                       # the operator frees space; the next start
b = broker(engine)
report["reconciled"] = reconcile(engine, b, aid).status
_, b, again = run(url)
report["again_sent"] = again.sent
report["after"] = [o.status.value for o in ledger.orders_for(engine, aid)]
report["reserve_after"] = os.path.getsize(database.reserve_path(engine))
report["state_after"] = ledger.trading_state(engine, aid)
report["alerts_after"] = ledger.alerts_frame(engine, ACCOUNT, limit=10).message.tolist()
assert_ledger(engine, aid, b)
print(json.dumps(report))
'''


def small_filesystem(tmp_path, script: Path, *args, size="8m") -> subprocess.CompletedProcess | None:
    "Run `script` with a fresh tmpfs of `size` mounted at tmp_path/mnt (a private mount namespace; none if unshare is not allowed here)."
    mnt = tmp_path / "mnt"; mnt.mkdir()
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tbprobe {mnt}"], capture_output=True)
    if probe.returncode:
        return None
    shell = 'mount -t tmpfs -o size="$1" tbfull "$2" && shift 2 && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", shell, "sh", size, str(mnt), sys.executable, str(script), "-", str(mnt), *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize("reserve", ["whole", "too small"])
def test_f6_a_real_filesystem_that_fills_up_mid_rebalance_halts_and_sends_nothing_more(tmp_path, reserve):
    """The store lives on an 8 MiB filesystem that fills up (to the last byte) as soon as the venue holds the first
    order: the ledger's next write fails with SQLite's real SQLITE_FULL. The rebalance stops there (the orders after
    it are never sent). With the storage reserve whole, its room takes the halt and the critical alert at once; with
    a reserve too small to help (one byte), the halt cannot be stored then, the reserve's note says it is owed, and the
    next start writes it before anything else. Either way, after the operator frees space, the next start reconciles
    the venue's order, trades nothing (halted), makes the reserve whole again, and the ledger audit is clean (run
    inside the child, where the filesystem is mounted)."""
    script = tmp_path / "full.py"
    script.write_text(SCENARIO + ("database.RESERVE_BYTES = 1\n" if reserve == "too small" else "") + FULL_DISK)
    r = small_filesystem(tmp_path, script, str(Path(__file__).parent))
    if r is None:
        pytest.skip("this machine does not allow a private mount namespace (unshare -rm), so no small filesystem can be made")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = __import__("json").loads(r.stdout.strip().splitlines()[-1])
    size = database.RESERVE_BYTES if reserve == "whole" else 1
    assert rep["reserve_before"] == size
    assert "database or disk is full (while trading tb-20221228-" in rep["error"] and "nothing more was sent" in rep["error"]
    assert rep["note"]["while"].startswith("trading tb-20221228-")
    if reserve == "whole":
        assert "trading is halted" in rep["error"] and rep["note"]["halted"] is True
        assert rep["state"] == "halted" and ["critical", "storage"] in rep["alerts"]
    else:
        assert "the next trading run records the halt before anything else" in rep["error"] and rep["note"]["halted"] is False
        assert rep["state"] == "active" and rep["alerts"] == []
        assert any("trading halted at the next start" in m for m in rep["alerts_after"])
    sent = [s for s in rep["ledger"] if s != "new"]
    assert rep["venue"] == len(sent) >= 1 and rep["ledger"][len(sent):] == ["new"] * (len(rep["ledger"]) - len(sent))   # nothing after the failure
    assert len(sent) < len(WEIGHTS)
    assert rep["reconciled"] == "clean" and rep["again_sent"] == 0 and rep["state_after"] == "halted"
    assert rep["after"][:len(sent)] == ["filled"] * len(sent) and set(rep["after"][len(sent):]) == {"denied"}
    assert rep["reserve_after"] == size

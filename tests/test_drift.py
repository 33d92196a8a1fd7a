"""The drift report against a ledger whose every difference is known.

A paper account the daily run (`traderbot.daily.trade_daily`) traded on the sample's last six sessions, every
session a rebalance, must show no drift at all. Then its ledger is tampered with, one cause at a time, the way
a real broker or a real operator would have changed it (a worse fill, a higher commission, a partial fill, a
denial, an order never placed, an order placed a session late, a session never run, a close missing from the
data), and each test checks that the report names that cause, with the amount computed here by hand. Where the
tampering changes the account's cash or positions, the equity snapshots are corrected too, as the daily run
would have recorded them, and nothing may be left unexplained.
"""
from __future__ import annotations
import sqlite3
from dataclasses import replace
from decimal import Decimal as D

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from traderbot.config import load_settings
from traderbot.core import DataError, StorageError
from traderbot.daily import trade_daily
from traderbot.data.sample import load_benchmark, load_closes
from traderbot.drift import CAUSES, drift_report
from traderbot.pipeline import ensure_run
from traderbot.store import database, ledger, schema
from traderbot.strategy import RebalanceCalendar, Strategy

SLIP = D("0.0005")                                   # settings.ini's slippage: the paper fill is close x (1 +/- SLIP)
PX, BENCH = load_closes(), load_benchmark()
DAYS = PX.index[-6:]


def settings_for(url: str, **costs):
    cfg = load_settings(env={"TRADERBOT__STORE__URL": url})
    return cfg.model_copy(update={"costs": cfg.costs.model_copy(update=costs)}) if costs else cfg


def strategy(cfg):
    return replace(Strategy.build(cfg), calendar=RebalanceCalendar("every", 1))   # every session trades


def backfill(cfg):
    "The daily run on each of DAYS, in the store `cfg` names."
    eng = database.open_store(cfg.store.url)
    for d in DAYS: trade_daily(eng, cfg, PX, d, ensure_run(eng, "", "daily", {}), strategy=strategy(cfg), benchmark=BENCH)
    return eng


@pytest.fixture(scope="module")
def traded(tmp_path_factory):
    "A SQLite file of the paper account after six daily runs."
    path = tmp_path_factory.mktemp("drift") / "live.db"
    backfill(settings_for(f"sqlite:///{path}")).dispose()
    return path


@pytest.fixture
def live(traded, tmp_path):
    "A private copy of the traded store: (engine, settings, account id)."
    path = tmp_path / "live.db"
    with sqlite3.connect(traded) as src, sqlite3.connect(path) as dst: src.backup(dst)
    cfg = settings_for(f"sqlite:///{path}")
    eng = database.open_store(cfg.store.url)
    yield eng, cfg, ledger.account_id(eng, "default")
    eng.dispose()


def report(eng, cfg, closes=PX, **kw):
    return drift_report(eng, cfg, closes, strategy=strategy(cfg), benchmark=BENCH, **kw)


# ---------------------------------------------------------------------------------------------------------
# Tampering with the live ledger (tests may run SQL; traderbot's modules outside store/ may not)
# ---------------------------------------------------------------------------------------------------------

def order_row(eng, coid: str):
    with eng.connect() as con: return con.execute(sa.select(schema.orders).where(schema.orders.c.client_order_id == coid)).one()


def fill_row(eng, coid: str):
    with eng.connect() as con: return con.execute(sa.select(schema.fills).where(schema.fills.c.client_order_id == coid)).one()


def pick(eng, aid, day, side=None):
    "The largest filled order of `day` (of `side`, if given)."
    o = ledger.order_history(eng, aid, day, day)
    o = o[(o.status == "filled") & ((o.side == side) if side else True)]
    assert len(o), f"no filled {side or ''} order on {day.date()}"
    return o.loc[(o.filled_quantity * o.average_price).astype(float).idxmax()]


def update(eng, table, where, **values):
    with database.transaction(eng) as con: con.execute(table.update().where(where).values(**values))


def delete_order(eng, coid: str):
    with database.transaction(eng) as con:
        for t in (schema.fills, schema.risk_denials): con.execute(sa.delete(t).where(t.c.client_order_id == coid))
        con.execute(sa.delete(schema.orders).where(schema.orders.c.client_order_id == coid))


def shift_snapshots(eng, aid, since, cash=D(0), positions=D(0)):
    "Move the cash and positions value of every equity snapshot from `since` on, as the ledger would have recorded them."
    s = schema.equity_snapshots.c
    with database.transaction(eng) as con:
        for r in con.execute(sa.select(s.as_of, s.cash, s.positions_value).where((s.account_id == aid) & (s.as_of >= since.date()))).all():
            c, p = r.cash + cash, r.positions_value + positions
            con.execute(schema.equity_snapshots.update().where((s.account_id == aid) & (s.as_of == r.as_of)).values(cash=c, positions_value=p, equity=c + p))


def close(day, symbol) -> D:
    return D(str(PX.at[day, symbol]))


def row_of(rpt, coid: str):
    return rpt.orders.set_index("client_order_id").loc[coid]


def assert_only(rpt, cause: str, amount: float, orders: int):
    "`cause` carries `amount` over `orders` orders, every other cause nothing, and nothing is unexplained."
    b = rpt.by_cause
    assert b.loc[cause, "amount"] == pytest.approx(amount, abs=1e-6) and b.loc[cause, "orders"] == orders, b
    assert b.drop(cause).amount.abs().max() < 0.005, b
    assert rpt.total == pytest.approx(rpt.equity.difference.iloc[-1], abs=0.005)


# ---------------------------------------------------------------------------------------------------------
# No drift
# ---------------------------------------------------------------------------------------------------------

def test_a_paper_account_traded_by_the_daily_run_has_no_drift(live):
    eng, cfg, aid = live
    rpt = report(eng, cfg)
    assert (rpt.start, rpt.end, rpt.as_of, rpt.stopped) == (DAYS[0], DAYS[-1], DAYS[-1], "")
    assert len(rpt.orders) == len(ledger.order_history(eng, aid)) > 6 * 3
    assert set(rpt.orders.side_of) == {"both"} and set(rpt.orders.cause) == {"none"}
    assert (rpt.orders[["quantity_effect", "price_effect", "commission_effect", "total"]] == 0).all().all()
    assert list(rpt.by_cause.index) == [*CAUSES, "earlier sessions", "unexplained"]
    assert (rpt.by_cause.amount == 0).all() and (rpt.by_cause.orders == 0).all()
    assert list(rpt.equity.index) == list(DAYS)
    assert (rpt.equity.live.round(2) == rpt.equity.replay.round(2)).all() and (rpt.equity.difference == 0).all()
    assert "No drift" in rpt.summary()


def test_one_session_is_the_full_reports_rows_of_that_session(live):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[-2])
    update(eng, schema.fills, schema.fills.c.client_order_id == o.client_order_id, commission=fill_row(eng, o.client_order_id).commission + 3)
    full, day = report(eng, cfg), report(eng, cfg, start=DAYS[-2], end=DAYS[-2])
    assert (day.start, day.end, day.as_of) == (DAYS[-2], DAYS[-2], DAYS[-2])
    pd.testing.assert_frame_equal(day.orders, full.orders[full.orders.session == DAYS[-2]].reset_index(drop=True))
    assert day.by_cause.amount["commission"] == pytest.approx(-3) and day.by_cause.orders["commission"] == 1


# ---------------------------------------------------------------------------------------------------------
# One cause at a time
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_worse_fill_price_is_fill_price(live, side):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[-1], side)
    worse = o.average_price + (D("0.10") if side == "buy" else D("-0.10"))   # 10 cents a share against the account
    q = o.filled_quantity
    update(eng, schema.orders, schema.orders.c.client_order_id == o.client_order_id, average_price=worse)
    update(eng, schema.fills, schema.fills.c.client_order_id == o.client_order_id, price=worse)
    shift_snapshots(eng, aid, DAYS[-1], cash=-q * D("0.10"))              # paid 10 cents a share more, or received that much less
    rpt = report(eng, cfg)
    r = row_of(rpt, o.client_order_id)
    assert (r.cause, r.price_effect, r.quantity_effect, r.commission_effect) == ("fill price", pytest.approx(-0.10 * float(q)), 0, 0)
    assert r.note == f"filled at {worse} live, {o.average_price} in the replay"
    assert_only(rpt, "fill price", -0.10 * float(q), 1)


def test_a_higher_commission_is_commission(live):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[-1])
    f = fill_row(eng, o.client_order_id)
    update(eng, schema.fills, schema.fills.c.id == f.id, commission=f.commission + 7)
    shift_snapshots(eng, aid, DAYS[-1], cash=D(-7))
    rpt = report(eng, cfg)
    assert (row_of(rpt, o.client_order_id).cause, row_of(rpt, o.client_order_id).commission_effect) == ("commission", -7)
    assert_only(rpt, "commission", -7, 1)


def test_a_partial_fill_is_quantity(live):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[-1], "buy")
    assert o.filled_quantity > 10
    q, p, c = o.filled_quantity - 10, o.average_price, close(DAYS[-1], o.symbol)
    update(eng, schema.orders, schema.orders.c.client_order_id == o.client_order_id, filled_quantity=q, status="partially_filled")
    update(eng, schema.fills, schema.fills.c.client_order_id == o.client_order_id, quantity=q)
    shift_snapshots(eng, aid, DAYS[-1], cash=10 * p, positions=-10 * c)   # 10 shares fewer bought (the commission is the broker's: unchanged)
    rpt = report(eng, cfg)
    expect = float(10 * (p - c))                                           # the 10 shares would have cost their slippage over the close
    assert expect == pytest.approx(float(10 * c * SLIP))
    r = row_of(rpt, o.client_order_id)
    assert (r.cause, r.price_effect, r.commission_effect) == ("quantity", 0, 0) and r.quantity_effect == pytest.approx(expect)
    assert r.note == f"filled {q:+} live, {o.filled_quantity:+} in the replay"
    assert_only(rpt, "quantity", expect, 1)


def test_a_rejection_live_is_a_denial(live):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[-1], "sell")
    f = fill_row(eng, o.client_order_id)
    c, q, p = close(DAYS[-1], o.symbol), o.filled_quantity, o.average_price
    with database.transaction(eng) as con: con.execute(sa.delete(schema.fills).where(schema.fills.c.id == f.id))
    update(eng, schema.orders, schema.orders.c.client_order_id == o.client_order_id, status="rejected", filled_quantity=D(0),
           average_price=None, reason="INSUFFICIENT_QUANTITY: test")
    shift_snapshots(eng, aid, DAYS[-1], cash=-(q * p - f.commission), positions=q * c)   # never sold: the shares are still held
    rpt = report(eng, cfg)
    expect = float(q * (c - p) + f.commission)      # selling below the close and paying commission, avoided
    r = row_of(rpt, o.client_order_id)
    assert (r.cause, r.note, r.status_live, r.status_replay) == ("denial", "live rejected: INSUFFICIENT_QUANTITY: test", "rejected", "filled")
    assert r.total == pytest.approx(expect) and expect > 0
    assert_only(rpt, "denial", expect, 1)


def test_an_order_only_the_replay_placed_is_not_planned(live):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[-1], "buy")
    f = fill_row(eng, o.client_order_id)
    c, q, p = close(DAYS[-1], o.symbol), o.filled_quantity, o.average_price
    delete_order(eng, o.client_order_id)
    shift_snapshots(eng, aid, DAYS[-1], cash=q * p + f.commission, positions=-q * c)
    rpt = report(eng, cfg)
    expect = -float(q * (c - p) - f.commission)     # minus the replay order's whole effect
    r = row_of(rpt, o.client_order_id)
    assert (r.side_of, r.cause, r.note) == ("replay", "not planned", "only the replay placed it")
    assert r.total == pytest.approx(expect)
    assert_only(rpt, "not planned", expect, 1)


def test_an_order_placed_a_session_late_is_timing(live):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[-2], "buy")
    row = order_row(eng, o.client_order_id)._asdict()
    late = D(str(close(DAYS[-1], o.symbol) * (1 + SLIP)))                 # what the paper venue would have paid a session later
    new = {**row, "id": None, "client_order_id": "tb-late-" + o.symbol, "as_of": DAYS[-1].date(), "average_price": late}
    with database.transaction(eng) as con:
        con.execute(schema.orders.insert().values(**{k: v for k, v in new.items() if k != "id"}))
        con.execute(schema.fills.update().where(schema.fills.c.client_order_id == o.client_order_id).values(client_order_id=new["client_order_id"], price=late))
        con.execute(sa.delete(schema.orders).where(schema.orders.c.client_order_id == o.client_order_id))
    rpt = report(eng, cfg)
    moved = rpt.orders.set_index("client_order_id").loc[[o.client_order_id, new["client_order_id"]]]
    assert moved.side_of.tolist() == ["replay", "live"] and set(moved.cause) == {"timing"}
    assert moved.note.tolist() == [f"the live run traded {o.symbol} (buy) within 5 sessions", f"the replay traded {o.symbol} (buy) within 5 sessions"]
    expect = float(o.filled_quantity * (o.average_price - late))           # the same shares, bought a session later at that session's price
    assert rpt.by_cause.loc["timing"].tolist() == [pytest.approx(expect), 2]
    assert rpt.by_cause.drop(["timing", "unexplained"]).amount.abs().max() == 0   # the snapshots were left alone: the rest is unexplained
    assert rpt.by_cause.amount["unexplained"] == pytest.approx(-expect, abs=1e-6)
    narrow = report(eng, cfg, within=0)
    assert set(narrow.orders.set_index("client_order_id").loc[[o.client_order_id, new["client_order_id"]], "cause"]) == {"not planned"}


def test_orders_of_a_session_the_daily_run_never_ran_are_not_run(live):
    eng, cfg, aid = live
    day = DAYS[-3]
    gone = ledger.order_history(eng, aid, day, day).client_order_id.tolist()
    for coid in gone: delete_order(eng, coid)
    s = schema.equity_snapshots.c
    with database.transaction(eng) as con: con.execute(sa.delete(schema.equity_snapshots).where((s.account_id == aid) & (s.as_of == day.date())))
    rpt = report(eng, cfg)
    mine = rpt.orders[rpt.orders.session == day]
    assert sorted(mine.client_order_id) == sorted(gone) and set(mine.cause) == {"not run"} and set(mine.side_of) == {"replay"}
    assert mine.note.iloc[0] == f"no daily run on {day.date()}"
    assert rpt.by_cause.orders["not run"] == len(gone) and rpt.by_cause.amount["not run"] == pytest.approx(mine.total.sum())
    assert np.isnan(rpt.equity.live[day]) and not np.isnan(rpt.equity.replay[day])


def test_a_close_missing_from_the_data_stops_the_replay_and_is_missing_data(live):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[-1])
    gap = PX.copy(); gap.loc[DAYS[-1], o.symbol] = np.nan
    rpt = report(eng, cfg, closes=gap)
    why = f"no close for {o.symbol} on {DAYS[-1].date()} in the data"
    assert (rpt.as_of, rpt.end, rpt.stopped) == (DAYS[-2], DAYS[-1], why)
    last = rpt.orders[rpt.orders.session == DAYS[-1]]
    assert len(last) == len(ledger.order_history(eng, aid, DAYS[-1], DAYS[-1])) and set(last.cause) == {"missing data"}
    assert last.total.isna().all() and last.note.iloc[0] == f"the replay stops at {DAYS[-2].date()}: {why}"
    assert np.isnan(rpt.by_cause.amount["missing data"]) and rpt.by_cause.orders["missing data"] == len(last)
    assert set(rpt.orders[rpt.orders.session < DAYS[-1]].cause) == {"none"}
    assert rpt.by_cause.drop("missing data").amount.abs().max() == 0
    assert np.isnan(rpt.equity.replay[DAYS[-1]]) and f"The replay stops at {DAYS[-2].date()}: {why}" in rpt.summary()


def test_drift_before_the_window_is_earlier_sessions(live):
    eng, cfg, aid = live
    o = pick(eng, aid, DAYS[0])
    f = fill_row(eng, o.client_order_id)
    update(eng, schema.fills, schema.fills.c.id == f.id, commission=f.commission + 5)
    shift_snapshots(eng, aid, DAYS[0], cash=D(-5))                     # the 5 stay out of the account from then on
    rpt = report(eng, cfg, start=DAYS[2])
    assert rpt.start == DAYS[2] and rpt.orders.session.min() == DAYS[2] and (rpt.orders.total == 0).all()
    assert_only(rpt, "earlier sessions", -5, 1)
    assert rpt.equity.difference.round(6).tolist() == [-5.0] * 4


# ---------------------------------------------------------------------------------------------------------
# A broker whose costs are not the model's: drift that compounds, and still adds up
# ---------------------------------------------------------------------------------------------------------

def test_a_broker_with_twice_the_fees_drifts_and_every_cent_is_explained(tmp_path):
    "The live account paid 10 bps where the paper venue charges 5: commission drift, then quantity drift from the smaller cash."
    live_cfg = settings_for(f"sqlite:///{tmp_path}/live.db", fees=0.001)
    eng = backfill(live_cfg)
    rpt = drift_report(eng, settings_for(live_cfg.store.url), PX, strategy=strategy(settings_for(live_cfg.store.url)), benchmark=BENCH)
    b = rpt.by_cause.amount
    both = rpt.orders[rpt.orders.side_of == "both"]
    assert b["commission"] == pytest.approx(float(sum(both.commission_replay - both.commission_live, D(0))))
    same = both[both.filled_quantity_live == both.filled_quantity_replay]
    assert len(same) and (same.commission_live == 2 * same.commission_replay).all()   # the same trade: twice the commission
    assert rpt.by_cause.orders["quantity"] > 0 and b["quantity"] != 0       # less cash after the fees: fewer shares bought later
    assert b["fill price"] == 0                                               # the same venue prices: only costs and sizes differ
    assert rpt.equity.difference.iloc[-1] < 0
    assert abs(b["unexplained"]) < 0.005                                      # every cent of the difference is an order's
    assert rpt.total == pytest.approx(rpt.equity.difference.iloc[-1], abs=0.005)


# ---------------------------------------------------------------------------------------------------------
# Errors name the account and the dates
# ---------------------------------------------------------------------------------------------------------

def test_errors_name_the_account_and_the_dates(live, tmp_path):
    eng, cfg, aid = live
    ghost = cfg.model_copy(update={"traderbot": cfg.traderbot.model_copy(update={"account": "ghost"})})
    with pytest.raises(StorageError, match="no account 'ghost'"): report(eng, ghost)
    with pytest.raises(DataError, match="account 'default': the window 2022-12-28 to 2022-12-20 is empty"):
        report(eng, cfg, start="2022-12-28", end="2022-12-20")
    ledger.ensure_account(eng, "new", "paper", D(1000))
    new = cfg.model_copy(update={"traderbot": cfg.traderbot.model_copy(update={"account": "new"})})
    with pytest.raises(DataError, match="account 'new' has no order and no equity snapshot yet"): report(eng, new)

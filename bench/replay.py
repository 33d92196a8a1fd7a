"""Part of `make bench` (bench/suite.py): replay speed on the sample beside backtrader running the same policy in the same run, with a gate that both produce the same orders.

The policy: momentum top 5, equal weight 19% each (35% a sector, as the strategy caps them), rebalanced on
traderbot's calendar (every 21 XNYS sessions, and the first session of the window), market-on-close, whole shares,
sells first, trades under `min_trade_notional` skipped, 5 bps slippage and 5 bps commission (settings.ini [costs]);
settings.ini's risk limits and breakers, but `max_order_notional` lifted (see `bench_settings`).
traderbot runs it through `traderbot.replay.replay` (the daily run's `trade_daily` for each session: the store, the
pre-trade gate, the breakers and the ledger). backtrader runs it as a `bt.Strategy` on the same closes, cheat-on-close,
with the same signal function (`traderbot.strategy.target_weights`), the same sizing formula as `plan_orders` on
backtrader's own value and positions, and the same cash rule as the gate (a buy whose notional at the close exceeds the
cash left is not sent). backtrader is a benchmark peer only (the `bench` extra), never a runtime dependency.

The gate, run first: over a short window (2016-01-04..2017-12-29) the two order lists (session, symbol, side,
quantity, sent or not) must be identical, the fills must agree in price and commission, and the equity curves on the
sessions that do not trade; otherwise it raises with the difference and nothing is timed. Over the whole sample it only
reports how far the two agree (traderbot's breakers and portfolio limits, which backtrader's side does not model,
eventually act). Those runs are the warm-up.
Speed (bench/harness.py: interleaved, median and spread): seconds per session of both, over the gate window (3
repetitions) and over the whole sample (1). traderbot's engine time is its replay's `.seconds` (the session loop,
without imports and store set-up), backtrader's is `cerebro.run()`: goal (issue 10) traderbot >= 10x backtrader's
sessions per second. The wall times (traderbot with store set-up, backtrader with building the feeds) are kept beside
them without a goal. `quick`: the gate window cut to 2016-01-04..2016-06-30, 2 repetitions, no whole sample (a smoke
test of the bench, not numbers to quote). Numbers are what this machine measured on this run.
"""
from __future__ import annotations
import argparse, math, os, sys, time
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BENCH, GATE_WINDOW = "replay", ("2016-01-04", "2017-12-29")
GOAL = 10.0   # issue 10: traderbot's replay at >= 10x backtrader's sessions per second


def policy(cfg):
    """The strategy both engines run: settings.ini's momentum strategy, top 5, equal weight of 19% each, no volatility target.

    The 5% left in cash and the 35% sector cap (under the gate's 40%) keep the policy inside the pre-trade limits: fully
    invested, the sells' costs leave the last buy short of cash, and traderbot's gate then denies it or lets the account
    overdraw (its cash check ignores slippage and commission), where backtrader refuses it at execution."""
    from traderbot.strategy import Strategy
    base = Strategy.build(cfg)
    return replace(base, signal="momentum", optimizer="equal", target_vol=None, order_style="market_on_close", tax_aware=False,
                   max_weight=0.19, max_sector_weight=0.35, sector_caps={}, tilts={},
                   momentum={**base.momentum, "top_n": 5, "max_weight": 0.19})


def bench_settings(cfg):
    "settings.ini with `max_order_notional` lifted: 33 years of compounding outgrow a fixed cap on one order, and then every order is denied."
    from decimal import Decimal
    return cfg.model_copy(update={"risk": cfg.risk.model_copy(update={"max_order_notional": Decimal(10**12)})})


# ---------------------------------------------------------------------------------------------------------- traderbot
def run_traderbot(cfg, closes:pd.DataFrame, st, start, end, benchmark) -> dict:
    "traderbot's production replay over the window: its orders (sent or denied), equity, and timings."
    from traderbot.replay import replay
    t0 = time.perf_counter()
    r = replay(cfg, closes, start=start, end=end, strategy=st, benchmark=benchmark)
    wall = time.perf_counter() - t0
    o = r.orders
    orders = pd.DataFrame({"session": pd.to_datetime(o.session.astype(str)).dt.date, "symbol": o.symbol, "side": o.side,
                           "quantity": [int(q) for q in o.quantity], "sent": o.status != "denied",
                           "status": o.status, "reason": o.reason.fillna("").astype(str),
                           "average_price": o.average_price, "commission": o.commission})
    return {"orders": orders, "equity": r.equity.astype(float), "notes": r.notes, "sessions": len(r.equity),
            "seconds": r.seconds, "wall": wall, "result": r}


# ---------------------------------------------------------------------------------------------------------- backtrader
def _bt_strategy(bt):
    "The policy as a backtrader strategy (built once backtrader is imported)."
    from traderbot.strategy import scheduled, target_weights

    class MomentumTopK(bt.Strategy):
        params = dict(st=None, closes=None, first=None)

        def __init__(self):
            self.log, self.values, self.fills = [], {}, []
            self.slip, self.fees = self.p.st.cost.slippage, self.p.st.cost.fees
            self.min_notional = float(self.p.st.min_trade_notional)

        def next(self):
            d0 = self.datas[0]
            day = pd.Timestamp(d0.datetime.date(0), tz="UTC")
            self.values[day] = self.broker.getvalue()          # marked at today's closes, before today's orders
            st = self.p.st
            if not (day == self.p.first or scheduled(st.calendar, day, st.exchange)): return
            w = target_weights(st, self.p.closes, day)          # the same signal function as traderbot (closes up to the previous session)
            equity, cash = self.broker.getvalue(), self.broker.getcash()
            held = {d._name: int(self.getposition(d).size) for d in self.datas}
            price = {d._name: float(d.close[0]) for d in self.datas}
            all_in = (1 + self.slip) * (1 + self.fees)
            plan = []
            for sym in sorted(set(w.index) | {s for s, q in held.items() if q}):   # plan_orders' formula, in floats
                ws, px, h = float(w.get(sym, 0.0)), price[sym], held.get(sym, 0)
                target = math.floor(equity * ws / (px * all_in))
                diff = target - h if target > h else math.floor(equity * ws / px) - h
                if diff == 0 or abs(diff) * px < self.min_notional: continue
                plan.append((sym, "buy" if diff > 0 else "sell", abs(diff)))
            plan.sort(key=lambda t: t[1] == "buy")                                 # sells first (stable)
            for sym, side, qty in plan:
                px = price[sym]
                if side == "sell":
                    cash += qty * px * (1 - self.slip) * (1 - self.fees)
                    self.sell(data=self.getdatabyname(sym), size=qty)
                elif qty * px > cash:                                              # the gate's cash rule: not sent
                    self.log.append((day.date(), sym, side, qty, False)); continue
                else:
                    cash -= qty * px * (1 + self.slip) * (1 + self.fees)
                    self.buy(data=self.getdatabyname(sym), size=qty)
                self.log.append((day.date(), sym, side, qty, True))

        def notify_order(self, order):
            if order.status in (order.Margin, order.Rejected, order.Canceled):
                self.log.append(("not filled", order.data._name, order.getstatusname(), order.size, False))
            elif order.status == order.Completed:
                self.fills.append((bt.num2date(order.executed.dt).date(), order.data._name, "buy" if order.isbuy() else "sell",
                                   abs(int(order.executed.size)), order.executed.price, order.executed.comm))

    return MomentumTopK


def run_backtrader(closes:pd.DataFrame, st, days:pd.DatetimeIndex, cash:float) -> dict:
    "The same policy in backtrader over `days` (one feed per symbol, OHLC = close), with its orders, values and timings."
    import backtrader as bt
    t0 = time.perf_counter()
    cerebro = bt.Cerebro(stdstats=False)
    window = closes.loc[days[0]:days[-1]]
    for sym in window.columns:
        c = window[sym].to_numpy(dtype=float)
        frame = pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": 1.0}, index=window.index.tz_localize(None))
        cerebro.adddata(bt.feeds.PandasData(dataname=frame, openinterest=None), name=sym)
    cerebro.broker.setcash(cash)
    cerebro.broker.set_coc(True)                      # market orders fill at the close of the session they were sent on
    cerebro.broker.set_checksubmit(False)             # no margin check at submission (the strategy applies the gate's cash rule)
    cerebro.broker.setcommission(commission=st.cost.fees)                       # fees x fill notional
    cerebro.broker.set_slippage_perc(st.cost.slippage, slip_open=True, slip_match=True, slip_out=True)   # close x (1 +- slippage)
    cerebro.addstrategy(_bt_strategy(bt), st=st, closes=closes, first=days[0])
    t1 = time.perf_counter()
    strat = cerebro.run(preload=True, runonce=True)[0]
    t2 = time.perf_counter()
    log = [r for r in strat.log if r[0] != "not filled"]
    orders = pd.DataFrame(log, columns=["session", "symbol", "side", "quantity", "sent"])
    fills = pd.DataFrame(strat.fills, columns=["session", "symbol", "side", "quantity", "price", "commission"])
    return {"orders": orders, "not_filled": [r for r in strat.log if r[0] == "not filled"], "fills": fills,
            "values": pd.Series(strat.values, dtype=float), "last": days[-1].date(), "sessions": len(window), "seconds": t2 - t1, "wall": t2 - t0}


# ---------------------------------------------------------------------------------------------------------- gate
KEY = ["session", "symbol", "side", "quantity", "sent"]

def order_diff(tb:pd.DataFrame, bt_:pd.DataFrame) -> pd.DataFrame:
    "Rows in one order list and not in the other (compared as multisets of session, symbol, side, quantity, sent)."
    a, b = tb[KEY].copy(), bt_[KEY].copy()
    for f in (a, b): f["n"] = f.groupby(KEY).cumcount()
    m = a.merge(b, on=KEY + ["n"], how="outer", indicator=True)
    m = m[m["_merge"] != "both"].assign(where=lambda f: f["_merge"].astype(str).map({"left_only": "traderbot only", "right_only": "backtrader only"}))
    return m.drop(columns=["n", "_merge"]).sort_values(["session", "symbol", "where"])


def _fill_gaps(tb:dict, btr:dict) -> pd.DataFrame:
    "Fills whose price or commission differ between the two engines (same session, symbol, side and quantity), or that only one has."
    o = tb["orders"][tb["orders"].status == "filled"]
    a = o[["session", "symbol", "side", "quantity"]].assign(price=o.average_price.astype(float), commission=o.commission.astype(float))
    a = a[a.session < btr["last"]]      # backtrader fills a cheat-on-close order while processing the next bar: none for the last session
    m = a.merge(btr["fills"], on=["session", "symbol", "side", "quantity"], how="outer", suffixes=(" traderbot", " backtrader"))
    gap = lambda c: (m[f"{c} traderbot"] - m[f"{c} backtrader"]).abs() / m[f"{c} traderbot"].abs().clip(lower=1e-12)
    return m[~((gap("price") <= 1e-9) & (gap("commission") <= 1e-9))]   # also the fills only one engine has (NaN gaps)


def first_difference(tb:dict, btr:dict):
    "The first session on which the two runs differ (an order, a denial or a fill), and what differs; None when they agree."
    o = tb["orders"]
    firsts = []
    den = o[~o.sent]
    if len(den): firsts.append((den.session.iloc[0], 0, f"traderbot's gate denied {den.symbol.iloc[0]} {den.side.iloc[0]}: {den.reason.iloc[0][:100]}"))
    d = order_diff(o, btr["orders"])
    if len(d): firsts.append((d.session.iloc[0], 1, f"{d.symbol.iloc[0]} {d.side.iloc[0]} {d.quantity.iloc[0]} only in {d['where'].iloc[0].split()[0]}"))
    f = _fill_gaps(tb, btr)
    if len(f): firsts.append((f.session.min(), 2, "a fill's price or commission"))
    return min(firsts)[::2] if firsts else None   # on one session, the denial (the cause) before the orders it changed


def gate(tb:dict, btr:dict) -> list[str]:
    "Why the two runs disagree (empty when the orders, the denials, the fills and the non-trading equity marks agree)."
    problems = []
    other = tb["orders"][(~tb["orders"].sent) & ~tb["orders"].reason.str.startswith("INSUFFICIENT_CASH")]
    if len(other):
        problems.append(f"traderbot's gate denied {len(other)} order(s) for reasons backtrader's side does not model "
                        f"(first: {other.session.iloc[0]} {other.symbol.iloc[0]}: {other.reason.iloc[0][:120]}); pick a window without them")
    d = order_diff(tb["orders"], btr["orders"])
    if len(d): problems.append(f"{len(d)} order(s) differ:\n" + d.head(40).to_string(index=False))
    if btr["not_filled"]: problems.append(f"backtrader did not fill {len(btr['not_filled'])} order(s): {btr['not_filled'][:5]}")
    f = _fill_gaps(tb, btr)
    if len(f): problems.append(f"{len(f)} fill(s) differ in price or commission (relative gap over 1e-9):\n" + f.head(10).to_string(index=False))
    quiet = tb["notes"].index[tb["notes"].str.startswith("no rebalance")]
    gap = (tb["equity"].reindex(quiet) - btr["values"].reindex(quiet)).abs() / tb["equity"].reindex(quiet)
    if len(gap) and gap.max() > 1e-9:
        problems.append(f"equity differs on sessions without trades: largest relative gap {gap.max():.2e} on {gap.idxmax().date()}")
    return problems


# ---------------------------------------------------------------------------------------------------------- suite
def setup() -> dict:
    "Settings (see `bench_settings`), the sample's closes and benchmark, the policy and the starting cash."
    from traderbot.config import load_settings
    from traderbot.data.sample import load_closes, load_benchmark
    cfg = bench_settings(load_settings(os.environ.get("TRADERBOT_SETTINGS") or Path(__file__).resolve().parents[1] / "settings.ini"))
    return dict(cfg=cfg, closes=load_closes(path=cfg.path(cfg.data.path)), st=policy(cfg),
                bench=load_benchmark(path=cfg.path(cfg.data.path)), cash=float(cfg.broker.initial_cash))


def checked(tb:dict, btr:dict, span:str, gated:bool) -> str:
    "The gate over a gated window (raises with the problems), or how far the two agree over an ungated one."
    o = tb["orders"]
    if gated:
        problems = gate(tb, btr)
        if problems: raise AssertionError(f"replay, {span}: the two engines did not produce the same orders:\n" + "\n".join(problems))
        return (f"{span}: same orders ({len(o)}: {int(o.sent.sum())} sent, {int((~o.sent).sum())} denied), same fills, "
                f"equity on sessions without trades equal (1e-9)")
    first = first_difference(tb, btr)
    same = o[o.session < first[0]] if first else o
    return (f"not gated (traderbot's breakers and limits act, backtrader's side has neither): same orders up to "
            f"{first[0] if first else span[-10:]} ({len(same)} orders on {same.session.nunique()} rebalances)"
            + (f"; first difference on {first[0]}: {first[1]}" if first else ""))


def window_cases(env:dict, label:str, start, end, reps:int, gated:bool) -> list[dict]:
    "Gate (or agreement report) on one run of each, then `reps` interleaved runs more; engine and wall seconds per session."
    from traderbot.replay import _window
    cfg, closes, st = env["cfg"], env["closes"], env["st"]
    days = _window(closes, start, end, st)
    tb_run = lambda: run_traderbot(cfg, closes, st, start, end, env["bench"])
    bt_run = lambda: run_backtrader(closes, st, days, env["cash"])
    span = f"{days[0].date()}..{days[-1].date()}"
    btr, tb = bt_run(), tb_run()
    gate_text = checked(tb, btr, span, gated)
    runs = {"tb": [tb], "bt": [btr]} if reps == 0 else {"tb": [], "bt": []}
    for i in range(reps):
        for side in (("tb", tb_run), ("bt", bt_run)) if i % 2 == 0 else (("bt", bt_run), ("tb", tb_run)):
            runs[side[0]].append(side[1]())
    per = lambda side, key: [r[key] / r["sessions"] for r in runs[side]]
    case = f"{label} {span} ({len(days)} sessions)"
    return [harness.result(BENCH, f"{case}: engine s per session", "traderbot replay", "backtrader cerebro.run",
                           per("tb", "seconds"), per("bt", "seconds"), goal={"min_speedup": GOAL}, gate=gate_text,
                           ours_sessions=tb["sessions"], peer_sessions=btr["sessions"]),
            harness.result(BENCH, f"{case}: wall s per session", "traderbot replay + store set-up", "backtrader + feeds",
                           per("tb", "wall"), per("bt", "wall"), gate=gate_text)]


def measure(quick:bool) -> list[dict]:
    "The gate window (3 repetitions) and the whole sample (its one run); with `quick` half a year, 2 repetitions, no whole sample."
    env = setup()
    if quick: return window_cases(env, "gate window", GATE_WINDOW[0], "2016-06-30", 2, True)
    return window_cases(env, "gate window", *GATE_WINDOW, 3, True) + window_cases(env, "whole sample", None, None, 0, False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="half a year, 2 repetitions: a smoke test of the bench, not numbers to quote")
    print(harness.table(measure(ap.parse_args(argv).quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

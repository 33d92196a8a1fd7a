"""Parameter sweeps: traderbot's fused numba kernels beside vectorbt (and backtrader on a subset), in one run.

Cases (10 bps fees, 5 bps slippage, next-close execution, 1e6 starting cash):
- MA crossover and the mean-reversion band on the last 5,000 daily closes of the embedded AAPL sample. Peer: vectorbt
  1.2.0 driven as fast as a vectorbt user drives a sweep: the signals of every combination as one boolean matrix
  (built with numpy from pandas' rolling numbers), one `Portfolio.from_signals(close, entries.shift(1), exits.shift(1))`
  call broadcasting the close, then the same metrics (total return, Sharpe from `returns()`, max drawdown, entries,
  exposure).
- Momentum top-k (traderbot's strategy) on the 20-stock sample, each variant traded as `run_backtest` trades
  `weight_schedule`. Peer: one vectorbt `from_orders` call on the column-stacked targets of every variant (close tiled,
  one cash-sharing group per variant, `call_seq="auto"`): faster than one call per variant, and exact. The targets are
  built before the clock starts (with `weight_schedule`, which is slow), so the peer is timed on simulation and metrics only.
- Peak memory (tracemalloc) of an MA-crossover sweep on a grid of about 50 million bars x combinations (26,280 hourly
  bars of a seeded random walk x 1,900 pairs), against vectorbt's on the same grid.
- backtrader 1.9.78.123 on a handful of MA-crossover pairs (no goal): one `Cerebro` run per pair, cheat-on-close so a
  signal of bar t fills at bar t+1's close. Its entries differ from ours (its CrossOver and order timing are not
  vectorbt's), so the gate only reports both counts: a speed reference, not a checked equal.
Correctness gate first: every metric of every combination equals vectorbt's to 1e-12 relative, or nothing is timed.
Numbers are what this machine measured on this run.
"""
from __future__ import annotations
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

COST = dict(fees=0.001, slippage=0.0005)
METRICS = ["total_return", "sharpe", "max_drawdown", "trades", "exposure"]


def grids(quick: bool) -> dict:
    "Each family's grid: about 1,350 MA pairs, 900 bands and 384 momentum variants (a tenth or so with `quick`)."
    if quick:
        return {"ma_crossover": dict(fast=list(range(2, 32, 6)), slow=list(range(20, 200, 20))),
                "band": dict(window=[10, 20, 40], entry_z=[1.0, 2.0], exit_z=[0.0, 0.5]),
                "momentum": dict(lookback=[126, 252], skip=[0, 21], top_n=[3, 5], rebalance_every=[21], vol_lookback=[63],
                                 max_volatility=[0.6], max_weight=[0.25])}
    return {"ma_crossover": dict(fast=list(range(2, 62, 2)), slow=list(range(20, 260, 5))),
            "band": dict(window=list(range(5, 105, 5)), entry_z=list(np.arange(1.0, 3.01, 0.25)), exit_z=[-1.0, -0.5, 0.0, 0.5, 1.0]),
            "momentum": dict(lookback=[63, 126, 189, 252], skip=[0, 21], top_n=[2, 3, 5, 8], rebalance_every=[5, 10, 21],
                             vol_lookback=[21, 63], max_volatility=[0.4, 0.6], max_weight=[0.25])}


# ---- MA crossover and band: vectorbt from_signals on a broadcast signal matrix

def vbt_signals(close: pd.Series, family: str, rows: pd.DataFrame):
    "Entries and exits of every combination of `rows` as boolean matrices, from pandas' rolling numbers."
    if family == "ma_crossover":
        m = {w: close.rolling(int(w)).mean().to_numpy() for w in np.union1d(rows.fast, rows.slow)}
        f = np.column_stack([m[w] for w in rows.fast]); s = np.column_stack([m[w] for w in rows.slow])
        fp, sp = np.roll(f, 1, axis=0), np.roll(s, 1, axis=0); fp[0] = sp[0] = np.nan
        return (f > s) & (fp <= sp), (f < s) & (fp >= sp)
    r = {w: close.rolling(int(w)) for w in np.unique(rows.window)}
    z = {w: ((close - r[w].mean()) / r[w].std()).to_numpy() for w in r}
    zz = np.column_stack([z[w] for w in rows.window])
    return zz < -rows.entry_z.to_numpy(), zz > -rows.exit_z.to_numpy()


def vbt_signal_sweep(close: pd.Series, family: str, rows: pd.DataFrame) -> pd.DataFrame:
    "The sweep through vectorbt: signals, one `from_signals`, then the metrics the kernel reports."
    import vectorbt as vbt
    en, ex = vbt_signals(close, family, rows)
    cols = pd.RangeIndex(len(rows))
    shift = lambda a: pd.DataFrame(a, close.index, cols).shift(1, fill_value=False)
    pf = vbt.Portfolio.from_signals(close, shift(en), shift(ex), init_cash=1e6, **COST)
    r = pf.returns()
    rec = pf.orders.records
    return pd.DataFrame({"total_return": pf.total_return().to_numpy(), "sharpe": (r.mean() / r.std() * np.sqrt(252)).to_numpy(),
                         "max_drawdown": pf.max_drawdown().to_numpy(),
                         "trades": np.bincount(rec["col"][rec["side"] == 0], minlength=len(rows)),
                         "exposure": (pf.assets() > 0).mean().to_numpy()})


# ---- momentum: vectorbt from_orders on column-stacked targets

def momentum_targets(closes: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    "`align_weights(closes, weight_schedule(closes, ...))` of every variant, stacked side by side (T, N x variants)."
    from traderbot.research.backtest import align_weights
    from traderbot.research.strategy import weight_schedule
    out = []
    for r in rows.itertuples():
        w = weight_schedule(closes, int(r.rebalance_every), lookback=int(r.lookback), skip=int(r.skip), top_n=int(r.top_n),
                            vol_lookback=int(r.vol_lookback), max_volatility=float(r.max_volatility), max_weight=float(r.max_weight))
        out.append(align_weights(closes, w, 1).to_numpy())
    return np.hstack(out)


def vbt_momentum(closes: pd.DataFrame, size: np.ndarray, n_var: int) -> pd.DataFrame:
    "Every variant through one vectorbt `from_orders` call (one cash-sharing group per variant), then the kernel's metrics."
    import vectorbt as vbt
    n = closes.shape[1]
    cols = pd.MultiIndex.from_product([range(n_var), closes.columns], names=["variant", "symbol"])
    close = pd.DataFrame(np.tile(closes.to_numpy(), n_var), closes.index, cols)
    pf = vbt.Portfolio.from_orders(close=close, size=pd.DataFrame(size, closes.index, cols), size_type="targetpercent",
                                   group_by=np.repeat(np.arange(n_var), n), cash_sharing=True, call_seq="auto",
                                   init_cash=1e6, freq="1D", **COST)
    r = pf.returns()
    sd = r.std().to_numpy()
    return pd.DataFrame({"total_return": pf.total_return().to_numpy(),
                         "sharpe": np.where(sd == 0, 0.0, r.mean().to_numpy() / np.where(sd == 0, 1, sd)) * np.sqrt(252),
                         "max_drawdown": pf.max_drawdown().to_numpy(),
                         "trades": np.bincount(pf.orders.records["col"] // n, minlength=n_var),
                         "exposure": (pf.asset_value() > 0).mean().to_numpy()})


# ---- the gate

def gate(ours: pd.DataFrame, ref: pd.DataFrame) -> str:
    "The worst relative gap over every metric and combination (Sharpe where the variant traded); raises past 1e-12."
    worst, moved = 0.0, ours.trades.to_numpy() > 0
    for col in ref.columns:
        a, b = ours[col].to_numpy(float), ref[col].to_numpy(float)
        if col == "sharpe": a, b = a[moved], b[moved]
        gap = np.where(a == b, 0.0, np.abs(a - b) / np.maximum(np.abs(b), 1e-300))
        worst = max(worst, float(gap.max(initial=0.0)))
    if not worst <= 1e-12: raise SystemExit(f"correctness gate failed: worst relative gap {worst:.3g} > 1e-12")
    return f"{len(ours)} combos x {len(ref.columns)} metrics equal to vectorbt's, worst relative gap {worst:.1e}"


# ---- backtrader

def backtrader_entries(close: pd.Series, fast: int, slow: int) -> int:
    "One backtrader run of the crossover (signal of bar t filled at bar t+1's close, all in, costs as ours); its entries."
    import backtrader as bt

    class Cross(bt.Strategy):
        params = dict(fast=fast, slow=slow)
        def __init__(self):
            self.x = bt.ind.CrossOver(bt.ind.SMA(period=self.p.fast), bt.ind.SMA(period=self.p.slow))
            self.entries = 0
        def next(self):
            if len(self) < 2: return
            if self.x[-1] > 0 and not self.position:
                self.entries += 1; self.order_target_percent(target=0.99)
            elif self.x[-1] < 0 and self.position: self.close()

    cerebro = bt.Cerebro(stdstats=False)
    px = close.to_numpy()
    df = pd.DataFrame({"open": px, "high": px, "low": px, "close": px, "volume": 0.0}, index=close.index.tz_localize(None))
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(Cross)
    cerebro.broker.setcash(1e6); cerebro.broker.setcommission(commission=COST["fees"])
    cerebro.broker.set_slippage_perc(COST["slippage"], slip_open=True, slip_match=False, slip_out=True)
    cerebro.broker.set_coc(True)
    return cerebro.run()[0].entries


def measure(quick: bool) -> list[dict]:
    "Every sweep case: MA crossover, band and momentum against vectorbt, peak memory on a ~50M-cell grid, backtrader."
    import numba
    from traderbot.core import CostModel
    from traderbot.data.sample import load_closes
    from traderbot.research.sweep import sweep_band, sweep_ma_crossover
    from traderbot.research.sweep_momentum import sweep_momentum
    cost, reps, g = CostModel(**COST), (2 if quick else 5), grids(quick)
    closes = load_closes()
    aapl = closes["AAPL"].iloc[-(1000 if quick else 5000):]
    note = dict(numba_threads=numba.get_num_threads())
    out = []
    for family, fn in (("ma_crossover", sweep_ma_crossover), ("band", sweep_band)):
        ours = lambda: fn(aapl, **g[family], cost=cost)
        rows = ours()
        out.append(harness.compare("sweep", f"{family}: {len(rows)} combos x {len(aapl)} daily bars", ours,
                                   lambda: vbt_signal_sweep(aapl, family, rows), peer_name="vectorbt from_signals", reps=reps,
                                   goal={"min_speedup": 100}, gate=lambda: gate(rows, vbt_signal_sweep(aapl, family, rows)), **note))
    ours = lambda: sweep_momentum(closes, **g["momentum"], cost=cost)
    rows = ours()
    size = momentum_targets(closes, rows)                                # built once, outside the peer's clock
    peer = lambda: vbt_momentum(closes, size, len(rows))
    out.append(harness.compare("sweep", f"momentum top-k: {len(rows)} variants x {closes.shape[0]} days x {closes.shape[1]} symbols",
                               ours, peer, peer_name="vectorbt from_orders (stacked)", reps=reps, goal={"min_speedup": 100},
                               gate=lambda: gate(rows, peer()), **note))
    out.append(memory_case(quick, cost))
    out.append(backtrader_case(aapl, cost))
    return out


def memory_case(quick: bool, cost) -> dict:
    "Peak memory of an MA sweep on about 50 million bars x combinations (5 million with `quick`), ours against vectorbt's."
    from traderbot.research.sweep import sweep_ma_crossover
    rng = np.random.default_rng(0)
    bars = 26_280 if not quick else 5_000
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.003, bars))), pd.date_range("2020-01-01", periods=bars, freq="h", tz="UTC"), name="SYN")
    grid = dict(fast=list(range(2, 78, 2)), slow=list(range(100, 1100, 20))) if not quick else dict(fast=list(range(2, 42, 2)), slow=list(range(50, 550, 10)))
    rows = sweep_ma_crossover(close, **grid, cost=cost)
    check = gate(rows, vbt_signal_sweep(close, "ma_crossover", rows))
    mo = harness.peak_mb(lambda: sweep_ma_crossover(close, **grid, cost=cost))
    mv = harness.peak_mb(lambda: vbt_signal_sweep(close, "ma_crossover", rows))
    return harness.result("sweep", f"peak memory, MA crossover: {len(rows)} combos x {bars} bars = {len(rows) * bars / 1e6:.0f}M cells",
                          "traderbot", "vectorbt from_signals", [mo], [mv], unit="MB", goal={"max_ratio": 0.2}, gate=check)


def backtrader_case(close: pd.Series, cost) -> dict:
    "A handful of MA pairs through backtrader, one run each, beside the sweep of the same pairs (no goal)."
    from traderbot.research.sweep import sweep_ma_crossover
    pairs = [(5, 20), (10, 50), (20, 100), (50, 200)]
    ours = lambda: [sweep_ma_crossover(close, f, s, cost=cost) for f, s in pairs]
    def check():
        mine = [int(r.trades.iloc[0]) for r in ours()]
        theirs = [backtrader_entries(close, f, s) for f, s in pairs]
        # not an equal-semantics peer yet: backtrader's CrossOver and order timing give other entries, so this only reports them
        return f"{len(pairs)} pairs, entries: ours {mine}, backtrader {theirs} (informational: semantics differ)"
    return harness.compare("sweep", f"MA crossover: {len(pairs)} pairs x {len(close)} daily bars", ours,
                           lambda: [backtrader_entries(close, f, s) for f, s in pairs], peer_name="backtrader", reps=3, gate=check)


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grids (a smoke test of the bench itself)")
    print(harness.table(measure(ap.parse_args(argv).quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: parameter sweeps, traderbot's fused numba kernels beside vectorbt on the same grid, in one run.

- MA crossover (fast < slow) and the mean-reversion band, long only, next-close execution, 10 bps fees and 5 bps
  slippage, on the last `--bars` daily closes of the embedded AAPL sample.
- Peer: vectorbt 1.2.0 as a researcher would drive it for a sweep: the same signals as boolean frames with a
  (parameters) MultiIndex, `Portfolio.from_signals(close, entries.shift(1), exits.shift(1), ...)`, then its total
  return, returns (for the Sharpe), max drawdown, order records (for the entries) and assets (for the exposure).
- Correctness gate first: every combination's metrics must equal vectorbt's to 1e-12 relative, or nothing is timed.
- Time: median (and range) of `--reps` interleaved repetitions after a warm-up that compiles both sides. Memory:
  tracemalloc's peak of one more run of each (numpy's buffers are traced; numba's are numpy's too).
Numbers are what this machine measured on this run (numba's thread count is printed with them).
"""
from __future__ import annotations
import argparse, statistics, sys, time, tracemalloc

import numpy as np
import pandas as pd


def grids(quick: bool) -> dict:
    "The two families' grids: about 1,350 MA pairs and 900 bands (a tenth of that with --quick)."
    if quick:
        return {"ma_crossover": dict(fast=list(range(2, 32, 6)), slow=list(range(20, 200, 20))),
                "band": dict(window=[10, 20, 40], entry_z=[1.0, 2.0], exit_z=[0.0, 0.5])}
    return {"ma_crossover": dict(fast=list(range(2, 62, 2)), slow=list(range(20, 260, 5))),
            "band": dict(window=list(range(5, 105, 5)), entry_z=list(np.arange(1.0, 3.01, 0.25)), exit_z=[-1.0, -0.5, 0.0, 0.5, 1.0])}


def vbt_signals(close: pd.Series, family: str, rows: pd.DataFrame):
    "Entries and exits for every combination of `rows` as boolean frames with a MultiIndex, built from pandas' rolling numbers."
    keys = [c for c in rows.columns if c in ("fast", "slow", "window", "entry_z", "exit_z")]
    cols = pd.MultiIndex.from_frame(rows[keys])
    if family == "ma_crossover":
        windows = np.union1d(rows.fast, rows.slow)
        m = {w: close.rolling(int(w)).mean().to_numpy() for w in windows}
        f = np.column_stack([m[w] for w in rows.fast]); s = np.column_stack([m[w] for w in rows.slow])
        fp, sp = np.roll(f, 1, axis=0), np.roll(s, 1, axis=0); fp[0] = sp[0] = np.nan
        en, ex = (f > s) & (fp <= sp), (f < s) & (fp >= sp)
    else:
        r = {w: close.rolling(int(w)) for w in np.unique(rows.window)}
        z = {w: ((close - r[w].mean()) / r[w].std()).to_numpy() for w in r}
        zz = np.column_stack([z[w] for w in rows.window])
        en, ex = zz < -rows.entry_z.to_numpy(), zz > -rows.exit_z.to_numpy()
    return pd.DataFrame(en, close.index, cols), pd.DataFrame(ex, close.index, cols)


def vbt_sweep(close: pd.Series, family: str, rows: pd.DataFrame, cost) -> pd.DataFrame:
    "The sweep through vectorbt: signals, `from_signals`, then the same metrics the kernel reports."
    import vectorbt as vbt
    en, ex = vbt_signals(close, family, rows)
    pf = vbt.Portfolio.from_signals(close, en.shift(1, fill_value=False), ex.shift(1, fill_value=False),
                                    fees=cost.fees, slippage=cost.slippage, init_cash=1e6)
    r = pf.returns()
    rec = pf.orders.records
    trades = np.bincount(rec["col"][rec["side"] == 0], minlength=len(rows))
    return pd.DataFrame({"total_return": pf.total_return().to_numpy(), "sharpe": (r.mean() / r.std() * np.sqrt(252)).to_numpy(),
                         "max_drawdown": pf.max_drawdown().to_numpy(), "trades": trades,
                         "exposure": (pf.assets() > 0).mean().to_numpy()})


def ours_sweep(close: pd.Series, family: str, grid: dict, cost) -> pd.DataFrame:
    from traderbot.research.sweep import sweep
    return sweep(close, family, grid, cost=cost)


def gate(ours: pd.DataFrame, ref: pd.DataFrame) -> float:
    "The worst relative gap over every metric and combination (Sharpe only where the variant moved); raises past 1e-12."
    worst = 0.0
    moved = ours.trades.to_numpy() > 0
    for col in ref.columns:
        a, b = ours[col].to_numpy(float), ref[col].to_numpy(float)
        if col == "sharpe": a, b = a[moved], b[moved]
        gap = np.where(a == b, 0.0, np.abs(a - b) / np.maximum(np.abs(b), 1e-300))
        worst = max(worst, float(gap.max(initial=0.0)))
    if not worst <= 1e-12: raise SystemExit(f"correctness gate failed: worst relative gap {worst:.3g} > 1e-12")
    return worst


def peak_mb(fn) -> float:
    "tracemalloc's peak, in MB, of one call of `fn`."
    tracemalloc.start(); tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    return peak / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=5000, help="daily bars, the last ones of the AAPL sample")
    ap.add_argument("--reps", type=int, default=3, help="interleaved timed repetitions")
    ap.add_argument("--quick", action="store_true", help="a small grid (a smoke test of the bench itself)")
    args = ap.parse_args(argv)
    import numba
    from traderbot.core import CostModel
    from traderbot.data.sample import load_closes
    close = load_closes(["AAPL"])["AAPL"].iloc[-args.bars:]
    cost = CostModel(fees=0.001, slippage=0.0005)
    rows = []
    for family, grid in grids(args.quick).items():
        ours = ours_sweep(close, family, grid, cost)                      # warm-up: compiles (or loads) the kernel
        worst = gate(ours, vbt_sweep(close, family, ours, cost))          # ... and vectorbt's simulator
        t_ours, t_vbt = [], []
        for _ in range(args.reps):
            t = time.perf_counter(); ours_sweep(close, family, grid, cost); t_ours.append(time.perf_counter() - t)
            t = time.perf_counter(); vbt_sweep(close, family, ours, cost); t_vbt.append(time.perf_counter() - t)
        m_ours = peak_mb(lambda: ours_sweep(close, family, grid, cost))
        m_vbt = peak_mb(lambda: vbt_sweep(close, family, ours, cost))
        rows.append((family, len(ours), t_ours, t_vbt, m_ours, m_vbt, worst))
    print(f"parameter sweeps, {time.strftime('%Y-%m-%d %H:%M')} on this machine ({numba.get_num_threads()} numba threads), "
          f"{len(close)} daily AAPL bars, fees {cost.fees}, slippage {cost.slippage}; median [min-max] of {args.reps} interleaved runs")
    print(f"{'family':13s} {'combos':>6s} {'cells':>9s} {'traderbot s':>20s} {'vectorbt s':>20s} {'speed-up':>9s} "
          f"{'peak MB ours':>12s} {'vectorbt':>9s} {'mem ratio':>9s} {'worst gap':>9s}")
    for family, n, to, tv, mo, mv, worst in rows:
        so, sv = statistics.median(to), statistics.median(tv)
        print(f"{family:13s} {n:6d} {n * len(close) / 1e6:8.1f}M {so:8.4f} [{min(to):.4f}-{max(to):.4f}] "
              f"{sv:8.3f} [{min(tv):.3f}-{max(tv):.3f}] {sv / so:8.1f}x {mo:12.1f} {mv:9.1f} {mo / mv:9.3f} {worst:9.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

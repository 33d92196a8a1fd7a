"""Part of `make bench` (bench/suite.py): VaR and ES of a 500-asset portfolio over 100,000 scenarios, each of traderbot's four methods next to a plain peer in the same run.

The scenarios are a seeded synthetic matrix of daily asset returns, 100,000 x 500 float64 (400 MB, built
once): a fat-tailed market factor (Student t, 4 degrees of freedom) times each asset's beta, plus normal
idiosyncratic noise. The portfolio's weights are random and sum to 1. Each method of
`traderbot.risk.measures.measure` is timed beside a plain computation of the same number, interleaved
(bench/harness.py: median and spread). Gate first: the two VaRs and ESs must agree (relative gap under `TOL`,
per method), or nothing is timed; the gate's run is the warm-up. No goal: the speed-ups inform. The peers:

- historical: the portfolio P&L as a per-scenario Python sum over the 500 assets, the losses sorted in
  Python, the quantile interpolated by hand (numpy's default linear rule) and ES the mean of the tail;
- parametric: the P&L with pandas (element-wise product and row sum, no BLAS), mean and standard deviation
  from pandas, the normal quantile and density from scipy;
- cornish_fisher: as parametric, with pandas' skewness and excess kurtosis, and ES by integrating the
  Cornish-Fisher quantile over the tail with scipy.integrate.quad (traderbot integrates the same way, on its
  own moments);
- monte_carlo: a per-scenario loop: for each of the 100,000 draws, the same seeded standard normals, times the
  Cholesky factor of the pandas covariance, plus the mean, summed with the weights; quantile as historical.

`quick` uses 5,000 scenarios x 50 assets and 2 repetitions (a smoke test of the bench, not numbers to quote).
Numbers are what this machine measured on this run; nothing here is a promise.
"""
from __future__ import annotations
import argparse, cProfile, io, math, operator, pstats, sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import integrate, stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from traderbot.risk.measures import METHODS, measure as risk_measure  # noqa: E402

BENCH, LEVEL = "risk", 0.99
TOL = {"historical": 1e-9, "parametric": 1e-9, "cornish_fisher": 1e-7, "monte_carlo": 1e-7}   # relative, VaR and ES
PEER_NAMES = {"historical": "Python sums, sorted losses", "parametric": "pandas moments + scipy normal",
              "cornish_fisher": "pandas moments + scipy quad", "monte_carlo": "per-draw loop, Cholesky"}


def scenarios(n:int, k:int, seed:int) -> tuple[pd.DataFrame, pd.Series]:
    "A seeded n x k matrix of one-factor, fat-tailed daily returns, and random weights summing to 1."
    rng = np.random.default_rng(seed)
    beta, idio, drift = rng.uniform(0.5, 1.5, k), rng.uniform(0.01, 0.03, k), rng.uniform(-2e-4, 6e-4, k)
    market = 0.01 * rng.standard_t(4, n) / math.sqrt(2)          # a t(4) has variance 2: daily market vol 1 %
    x = rng.standard_normal((n, k))
    x *= idio
    for i in range(0, n, 10_000):                                 # in blocks: no second 400 MB temporary
        x[i:i + 10_000] += np.outer(market[i:i + 10_000], beta) + drift
    cols = [f"A{j:03d}" for j in range(k)]
    w = rng.random(k)
    return pd.DataFrame(x, columns=cols, copy=False), pd.Series(w / w.sum(), index=cols)


def sorted_quantile(losses:list[float], level:float) -> tuple[float, float]:
    "VaR (linear interpolation between order statistics, as numpy's default) and ES of a sorted list."
    pos = level * (len(losses) - 1)
    lo = int(math.floor(pos))
    v = losses[lo] + (pos - lo) * (losses[lo + 1] - losses[lo])
    tail = [x for x in losses if x >= v]
    return v, sum(tail) / len(tail)


def plain_historical(df:pd.DataFrame, w:pd.Series) -> tuple[float, float]:
    "Per-scenario Python sums, then sorted losses."
    wl, mul = w.tolist(), operator.mul
    pnl = [sum(map(mul, row.tolist(), wl)) for row in df[w.index].to_numpy()]
    return sorted_quantile(sorted(-p for p in pnl), LEVEL)


def pandas_pnl(df:pd.DataFrame, w:pd.Series) -> pd.Series:
    "Portfolio P&L by pandas' element-wise product and row sum."
    return (df[w.index] * w).sum(axis=1)


def plain_parametric(df:pd.DataFrame, w:pd.Series) -> tuple[float, float]:
    "Normal VaR and ES from pandas moments and scipy's normal."
    pnl = pandas_pnl(df, w)
    mu, sd, z = pnl.mean(), pnl.std(), stats.norm.ppf(LEVEL)
    return sd * z - mu, sd * stats.norm.pdf(z) / (1 - LEVEL) - mu


def plain_cornish_fisher(df:pd.DataFrame, w:pd.Series) -> tuple[float, float]:
    "Cornish-Fisher VaR, and ES as the integral of the corrected quantile over the tail."
    pnl = pandas_pnl(df, w)
    mu, sd, s, k = pnl.mean(), pnl.std(), pnl.skew(), pnl.kurt()
    def quantile_loss(u):                                          # loss at tail probability u in (LEVEL, 1)
        z = stats.norm.ppf(1 - u)
        return -(mu + sd * (z + (z**2 - 1) * s / 6 + (z**3 - 3 * z) * k / 24 - (2 * z**3 - 5 * z) * s**2 / 36))
    es = integrate.quad(quantile_loss, LEVEL, 1, limit=200)[0] / (1 - LEVEL)
    return quantile_loss(LEVEL), es


def plain_monte_carlo(df:pd.DataFrame, w:pd.Series, n_sims:int, seed:int) -> tuple[float, float]:
    "One scenario at a time: seeded normals, correlated by the Cholesky factor, summed with the weights."
    a = df[w.index]
    mu, chol, wv = a.mean().to_numpy(), np.linalg.cholesky(a.cov().to_numpy()), w.to_numpy()
    rng, k, pnl = np.random.default_rng(seed), len(wv), []
    for _ in range(n_sims):
        pnl.append(float((mu + chol @ rng.standard_normal(k)) @ wv))
    return sorted_quantile(sorted(-p for p in pnl), LEVEL)


def gate(method:str, ours, peer) -> str:
    "Raise unless traderbot's VaR and ES equal the peer's within `TOL[method]` (relative); what was checked."
    r, (v, e) = ours(), peer()
    gap = max(abs(r.var - v) / abs(v), abs(r.es - e) / abs(e))
    if not gap <= TOL[method]: raise AssertionError(f"risk {method}: VaR {r.var:.6g} vs {v:.6g}, ES {r.es:.6g} vs {e:.6g}: relative gap {gap:.1e} > {TOL[method]:g}")
    return f"VaR {r.var:.4g} and ES {r.es:.4g} at {LEVEL:.0%} equal the peer's: worst relative gap {gap:.1e} (<= {TOL[method]:g})"


def cases(df:pd.DataFrame, w:pd.Series, reps:int, n_sims:int, seed:int) -> list[dict]:
    "Each method: traderbot's `measure` beside its plain peer, gated on the numbers."
    peers = {"historical": lambda: plain_historical(df, w), "parametric": lambda: plain_parametric(df, w),
             "cornish_fisher": lambda: plain_cornish_fisher(df, w), "monte_carlo": lambda: plain_monte_carlo(df, w, n_sims, seed)}
    shape = f"{len(df):,} scenarios x {df.shape[1]} assets"
    out = []
    for m in METHODS:
        ours = lambda m=m: risk_measure(df, LEVEL, m, weights=w, n_sims=n_sims, seed=seed)
        out.append(harness.compare(BENCH, f"{m}, {shape}", ours, peers[m], ours_name=f"measure({m!r})", peer_name=PEER_NAMES[m],
                                   reps=reps, goal=None, gate=lambda m=m, ours=ours: gate(m, ours, peers[m]), warmup=False))
    return out


def measure(quick:bool) -> list[dict]:
    "Every method on 100,000 scenarios x 500 assets, 3 repetitions (5,000 x 50 and 2 with `quick`)."
    n, k, reps = (5_000, 50, 2) if quick else (100_000, 500, 3)
    df, w = scenarios(n, k, 0)
    return cases(df, w, reps, n, 0)


def profile(df:pd.DataFrame, w:pd.Series, method:str, n_sims:int, seed:int, top:int=12) -> str:
    "cProfile of one traderbot call, the `top` entries by cumulative time."
    pr = cProfile.Profile()
    pr.enable(); risk_measure(df, LEVEL, method, weights=w, n_sims=n_sims, seed=seed); pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(top)
    return s.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5,000 x 50, 2 repetitions: a smoke test of the bench, not numbers to quote")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of traderbot's Monte Carlo call")
    args = p.parse_args(argv)
    print(harness.table(measure(args.quick)))
    if args.profile:
        n, k = (5_000, 50) if args.quick else (100_000, 500)
        df, w = scenarios(n, k, 0)
        print(profile(df, w, "monte_carlo", n, 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())

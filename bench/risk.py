"""`make bench`: VaR and ES of a 500-asset portfolio over 100,000 scenarios, each of traderbot's four methods next to a plain peer in the same run.

The scenarios are a seeded synthetic matrix of daily asset returns, 100,000 x 500 float64 (400 MB, built
once): a fat-tailed market factor (Student t, 4 degrees of freedom) times each asset's beta, plus normal
idiosyncratic noise. The portfolio's weights are random and sum to 1. Each method of
`traderbot.risk.measures.measure` is timed (median of `--repeats` runs) beside a plain computation of the same
number, and the two numbers are compared. The peers:

- historical: the portfolio P&L as a per-scenario Python sum over the 500 assets, the losses sorted in
  Python, the quantile interpolated by hand (numpy's default linear rule) and ES the mean of the tail;
- parametric: the P&L with pandas (element-wise product and row sum, no BLAS), mean and standard deviation
  from pandas, the normal quantile and density from scipy;
- cornish_fisher: as parametric, with pandas' skewness and excess kurtosis, and ES by integrating the
  Cornish-Fisher quantile over the tail with scipy.integrate.quad (traderbot integrates the same way, on its
  own moments);
- monte_carlo: a per-scenario loop: for each of the 100,000 draws, the same seeded standard normals, times the
  Cholesky factor of the pandas covariance, plus the mean, summed with the weights; quantile as historical.

Numbers are what this machine measured on this run; nothing here is a promise.
"""
from __future__ import annotations
import argparse, cProfile, io, math, operator, pstats, statistics, sys, time

import numpy as np
import pandas as pd
from scipy import integrate, stats

from traderbot.risk.measures import METHODS, measure

LEVEL = 0.99


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


def timed(f, repeats:int):
    "The result of `f()` and the median of `repeats` wall times in seconds."
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter(); out = f(); times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def rows(df:pd.DataFrame, w:pd.Series, repeats:int, n_sims:int, seed:int) -> dict:
    "Each method: traderbot's time and numbers beside its peer's."
    peers = {"historical": lambda: plain_historical(df, w), "parametric": lambda: plain_parametric(df, w),
             "cornish_fisher": lambda: plain_cornish_fisher(df, w), "monte_carlo": lambda: plain_monte_carlo(df, w, n_sims, seed)}
    out = {}
    for m in METHODS:
        r, t_tb = timed(lambda: measure(df, LEVEL, m, weights=w, n_sims=n_sims, seed=seed), repeats)
        (v, e), t_peer = timed(peers[m], repeats)
        out[m] = {"traderbot s": t_tb, "peer s": t_peer, "speedup": t_peer / t_tb, "VaR": r.var, "ES": r.es,
                  "peer VaR": v, "peer ES": e, "max rel diff": max(abs(r.var - v) / abs(v), abs(r.es - e) / abs(e))}
    return out


def profile(df:pd.DataFrame, w:pd.Series, method:str, n_sims:int, seed:int, top:int=12) -> str:
    "cProfile of one traderbot call, the `top` entries by cumulative time."
    pr = cProfile.Profile()
    pr.enable(); measure(df, LEVEL, method, weights=w, n_sims=n_sims, seed=seed); pr.disable()
    s = io.StringIO(); pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(top)
    return s.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", type=int, default=100_000, help="rows of the returns matrix, and Monte Carlo draws")
    p.add_argument("--assets", type=int, default=500, help="columns of the returns matrix")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per computation; the median is shown")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true", help="also print a cProfile of traderbot's Monte Carlo call")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    df, w = scenarios(args.scenarios, args.assets, args.seed)
    built = time.perf_counter() - t0
    table = pd.DataFrame(rows(df, w, args.repeats, args.scenarios, args.seed)).T
    print(f"VaR/ES at {LEVEL:.0%}, {args.scenarios:,} scenarios x {args.assets} assets (float64, {df.to_numpy().nbytes / 2**20:,.0f} MiB, "
          f"built in {built:.1f} s), median of {args.repeats}; {time.strftime('%Y-%m-%d %H:%M')} on this machine:")
    with pd.option_context("display.width", 200):
        print(table.to_string(formatters={c: "{:.3f}".format for c in ["traderbot s", "peer s"]} |
                              {c: "{:.1f}x".format for c in ["speedup"]} | {c: "{:.6f}".format for c in ["VaR", "ES", "peer VaR", "peer ES"]} |
                              {"max rel diff": "{:.1e}".format}))
    if args.profile: print(profile(df, w, "monte_carlo", args.scenarios, args.seed))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

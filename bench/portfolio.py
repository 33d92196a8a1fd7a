"""Portfolio construction solve times: traderbot.portfolio.optimize (riskfolio-lib) next to a plain formulation of the same problem.

For 20 and 200 assets (synthetic daily returns of a seeded three-factor model, 1000 observations) it times
`traderbot.portfolio.optimize` for min-variance and mean-variance (riskfolio's `Portfolio`) and for HRP
(riskfolio's `HCPortfolio`), each beside its peer in the same run: a generic cvxpy problem with
`cp.quad_form` on the same covariance and cvxpy's default solver, and a plain scipy/numpy HRP (single
linkage + recursive bisection). The max |weight difference| column shows both sides solve the same problem.
traderbot's time is the whole call (checks, feasibility linear programs, covariance estimate, solve);
"riskfolio solve only" is the same solve given the moments. Numbers are what this machine measured on
this run; nothing here is a promise.
"""
from __future__ import annotations
import argparse, statistics, sys, time, warnings

import numpy as np
import pandas as pd

from traderbot.portfolio import optimize as pf

RISK_AVERSION = 4.0


def factor_returns(n_assets:int, n_obs:int=1000, seed:int=0) -> pd.DataFrame:
    "Daily returns of a seeded three-factor model: r = B f + e, with small positive drifts."
    rng = np.random.default_rng(seed)
    f = rng.normal(0.0003, 0.01, (n_obs, 3))
    B = rng.normal(1.0, 0.4, (n_assets, 3)) * [1.0, 0.5, 0.3]
    e = rng.normal(0, 1, (n_obs, n_assets)) * rng.uniform(0.008, 0.02, n_assets)
    idx = pd.date_range("2019-01-02", periods=n_obs, freq="B", tz="UTC")
    return pd.DataFrame(f @ B.T + e + rng.normal(0.0002, 0.0002, n_assets), index=idx, columns=[f"S{i:03d}" for i in range(n_assets)])


def timed(fn, repeats:int) -> tuple[float, object]:
    "Median wall time in ms of `repeats` calls of `fn`, and its last result."
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter(); out = fn(); ms.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ms), out


def plain_cvxpy(mu:np.ndarray, cov:np.ndarray, risk_aversion:float|None) -> np.ndarray:
    "The same long-only, fully invested problem as a generic cvxpy model, default solver."
    import cvxpy as cp
    w = cp.Variable(len(mu))
    risk = cp.quad_form(w, cov)
    obj = cp.Minimize(risk) if risk_aversion is None else cp.Maximize(mu @ w - risk_aversion / 2 * risk)
    cp.Problem(obj, [cp.sum(w) == 1, w >= 0]).solve()
    return w.value


def plain_hrp(returns:pd.DataFrame) -> np.ndarray:
    "HRP written plainly: correlation distance, single linkage with optimal leaf order, recursive bisection, inverse variance."
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform
    x = returns.to_numpy()
    cov, corr = np.cov(x, rowvar=False), np.corrcoef(x, rowvar=False)
    dist = np.sqrt(np.clip((1 - corr) / 2, 0, 1))
    order = leaves_list(linkage(squareform(dist, checks=False), "single", optimal_ordering=True))
    def cluster_var(items):
        ivp = 1 / np.diag(cov)[items]; ivp /= ivp.sum()
        return ivp @ cov[np.ix_(items, items)] @ ivp
    w, clusters = np.ones(len(order)), [list(order)]
    while clusters:
        clusters = [c[j:k] for c in clusters for j, k in ((0, len(c) // 2), (len(c) // 2, len(c))) if len(c) > 1]
        for left, right in zip(clusters[::2], clusters[1::2]):
            vl, vr = cluster_var(left), cluster_var(right)
            w[left] *= 1 - vl / (vl + vr); w[right] *= vl / (vl + vr)
    return w


def rows_for(n_assets:int, repeats:int) -> dict:
    "Timings and weight differences for one universe size."
    r = factor_returns(n_assets)
    mu, cov = pf.estimate(r)                             # the annualised Ledoit-Wolf moments both sides use
    spec = pf.weight_constraints(r.columns)
    out = {}
    for name, method, aversion in (("min-variance", "min_variance", None), ("mean-variance", "mean_variance", RISK_AVERSION)):
        t_tb, w_tb = timed(lambda: pf.optimize(r, method, risk_aversion=aversion), repeats)
        t_rf, _ = timed(lambda: pf.riskfolio_convex(method, r, mu, cov, spec, risk_aversion=aversion), repeats)
        t_cp, w_cp = timed(lambda: plain_cvxpy(mu.to_numpy(), cov.to_numpy(), aversion), repeats)
        out[(n_assets, name, "traderbot optimize (riskfolio)")] = {"median ms": t_tb, "max |dw| vs plain": np.abs(w_tb.to_numpy() - w_cp).max()}
        out[(n_assets, name, "riskfolio solve only")] = {"median ms": t_rf, "max |dw| vs plain": np.nan}
        out[(n_assets, name, "plain cvxpy quad_form (peer)")] = {"median ms": t_cp, "max |dw| vs plain": 0.0}
    t_tb, w_tb = timed(lambda: pf.optimize(r, "hrp", covariance="sample"), repeats)
    t_pl, w_pl = timed(lambda: plain_hrp(r), repeats)
    out[(n_assets, "HRP", "traderbot optimize (riskfolio HCPortfolio)")] = {"median ms": t_tb, "max |dw| vs plain": np.abs(w_tb.to_numpy() - w_pl).max()}
    out[(n_assets, "HRP", "plain scipy/numpy (peer)")] = {"median ms": t_pl, "max |dw| vs plain": 0.0}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=7, help="repeats per measurement (the median is shown)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning, module="cvxpy")
    t0 = time.perf_counter()
    pf.optimize(factor_returns(20), "hrp"); plain_cvxpy(np.ones(3), np.eye(3), None)   # first calls pay the riskfolio and cvxpy imports
    rows = {**rows_for(20, args.n), **rows_for(200, args.n)}
    table = pd.DataFrame(rows).T
    table.index.names = ["assets", "problem", "implementation"]
    print(f"portfolio solve times, {time.strftime('%Y-%m-%d %H:%M')} on this machine (1000 daily observations, long-only, fully invested):")
    print(table.to_string(float_format=lambda x: f"{x:.3g}"))
    print(f"total bench time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Portfolio construction: traderbot.portfolio.optimize's solves beside a plain formulation of the same problem.

For 20 and 200 assets (daily returns of a seeded three-factor model, 1000 observations; Ledoit-Wolf
moments from `estimate`; long-only, fully invested, each name capped, five sectors capped at 30 %):

- min variance, mean-variance (risk aversion 4) and max Sharpe (Charnes-Cooper): `solve_convex`, which
  re-solves a cvxpy problem built once per shape with the moments as Parameters, against a plain cvxpy
  problem built and solved per call as a user would write it (`cp.quad_form`), same solver (Clarabel) and
  tolerances. Goal: at most 1.5x the plain problem's time. Gate: max |dw| against the plain problem and
  against riskfolio's `Portfolio.optimization`, and every constraint met.
- HRP: `hrp_weights` against a plain scipy/numpy HRP on the same covariance and correlation. Goal: at most
  2x. Gate: same weights as the plain one and as riskfolio's `HCPortfolio`.
- informational (no goal): the whole `optimize` call (checks, estimates, feasibility programs, solve)
  against scikit-learn's Ledoit-Wolf plus the plain problem.

Numbers are what this machine measured on this run; nothing here is a promise.
"""
from __future__ import annotations
import sys, warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from traderbot.portfolio import optimize as pf  # noqa: E402

BENCH, RISK_AVERSION, RF, SECTOR_CAP = "portfolio", 4.0, 0.0, 0.3
CONVEX = {"min_variance": "min variance", "mean_variance": "mean-variance", "max_sharpe": "max Sharpe"}


def factor_returns(n_assets:int, n_obs:int=1000, seed:int=0) -> pd.DataFrame:
    "Daily returns of a seeded three-factor model: r = B f + e, with small positive drifts."
    rng = np.random.default_rng(seed)
    f = rng.normal(0.0003, 0.01, (n_obs, 3))
    B = rng.normal(1.0, 0.4, (n_assets, 3)) * [1.0, 0.5, 0.3]
    e = rng.normal(0, 1, (n_obs, n_assets)) * rng.uniform(0.008, 0.02, n_assets)
    idx = pd.date_range("2019-01-02", periods=n_obs, freq="B", tz="UTC")
    return pd.DataFrame(f @ B.T + e + rng.normal(0.0002, 0.0002, n_assets), index=idx, columns=[f"S{i:03d}" for i in range(n_assets)])


def constraints(returns:pd.DataFrame) -> dict:
    "Each name capped at 3/n (at most 0.15), five sectors (by position) capped at 30 %."
    n = returns.shape[1]
    sectors = pd.Series([f"sector{i % 5}" for i in range(n)], index=returns.columns)
    return dict(bounds=(0.0, min(0.15, 3 / n)), sectors=sectors, sector_bounds={s: (0.0, SECTOR_CAP) for s in sectors.unique()})


def plain_cvxpy(method:str, mu:np.ndarray, cov:np.ndarray, cap:float, sectors:np.ndarray) -> np.ndarray:
    "The problem as a user writes it, built and solved per call: quad_form, caps, sector sums, Charnes-Cooper for Sharpe."
    import cvxpy as cp
    w = cp.Variable(len(mu)); k = cp.Variable(nonneg=True) if method == "max_sharpe" else 1.0
    cons = [cp.sum(w) == k, w >= 0, w <= cap * k] + [cp.sum(w[sectors == s]) <= SECTOR_CAP * k for s in np.unique(sectors)]
    risk = cp.quad_form(w, cp.psd_wrap(cov))
    if method == "max_sharpe": cons.append((mu - RF) @ w == 1)
    obj = cp.Maximize(mu @ w - RISK_AVERSION / 2 * risk) if method == "mean_variance" else cp.Minimize(risk)
    cp.Problem(obj, cons).solve(solver="CLARABEL", **pf._SOLVERS["CLARABEL"])
    return w.value / (k.value if method == "max_sharpe" else 1.0)


def plain_hrp(cov:np.ndarray, corr:np.ndarray) -> np.ndarray:
    "HRP written plainly: correlation distance, single linkage with optimal leaf order, recursive bisection, inverse variance."
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform
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


def plain_moments(returns:pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    "Annualised mean and scikit-learn Ledoit-Wolf covariance, as a user computes them."
    from sklearn.covariance import LedoitWolf
    x = returns.to_numpy()
    return x.mean(0) * 252, LedoitWolf().fit(x).covariance_ * 252


def convex_gate(method:str, r, mu, cov, spec, cap, sectors) -> str:
    "Raise unless ours equals the plain problem and riskfolio (max |dw| <= 1e-5) and meets every constraint."
    ours = pf.solve_convex(method, mu, cov, spec, rf=RF, risk_aversion=RISK_AVERSION)
    d_plain = np.abs(ours - plain_cvxpy(method, mu.to_numpy(), cov.to_numpy(), cap, sectors)).max()
    d_rf = np.abs(ours - pf.riskfolio_convex(method, r, mu, cov, spec, rf=RF, risk_aversion=RISK_AVERSION)).max()
    broken = spec.violations(ours)
    if d_plain > 1e-5 or d_rf > 1e-5 or broken: raise AssertionError(f"{method}: max |dw| plain {d_plain:.2g}, riskfolio {d_rf:.2g}, broken {broken}")
    return f"max |dw| vs plain cvxpy {d_plain:.1e}, vs riskfolio {d_rf:.1e} (both <= 1e-5); every constraint met"


def hrp_gate(r, cov, corr) -> str:
    "Raise unless ours equals the plain HRP (1e-12) and riskfolio's HCPortfolio (1e-8) on the same covariance."
    import riskfolio as rp
    ours = pf.hrp_weights(cov, corr)
    d_plain = np.abs(ours - plain_hrp(cov, corr)).max()
    with pf.quiet():
        ref = rp.HCPortfolio(returns=r).optimization(model="HRP", codependence="pearson", rm="MV", method_cov="ledoit", linkage="single", leaf_order=True)
    d_rf = np.abs(ours - ref["weights"].to_numpy()).max()
    if d_plain > 1e-12 or d_rf > 1e-8: raise AssertionError(f"hrp: max |dw| plain {d_plain:.2g}, riskfolio {d_rf:.2g}")
    return f"max |dw| vs plain scipy {d_plain:.1e} (<= 1e-12), vs riskfolio HCPortfolio {d_rf:.1e} (<= 1e-8)"


def cases_for(n:int, reps:int) -> list[dict]:
    "Every case at one universe size."
    r = factor_returns(n)
    kw = constraints(r)
    mu, cov = pf.estimate(r)
    spec = pf.weight_constraints(r.columns, kw["bounds"], kw["sectors"], kw["sector_bounds"])
    cap, sectors = kw["bounds"][1], kw["sectors"].to_numpy()
    m, c = mu.to_numpy(), cov.to_numpy()
    out = []
    for method, label in CONVEX.items():
        out.append(harness.compare(
            BENCH, f"{label}, {n} assets", lambda: pf.solve_convex(method, mu, cov, spec, rf=RF, risk_aversion=RISK_AVERSION),
            lambda: plain_cvxpy(method, m, c, cap, sectors), ours_name="solve_convex (cached cvxpy)", peer_name="plain cvxpy per call",
            reps=reps, goal={"max_ratio": 1.5}, gate=lambda: convex_gate(method, r, mu, cov, spec, cap, sectors)))
    corr = np.corrcoef(r.to_numpy(), rowvar=False)
    out.append(harness.compare(
        BENCH, f"HRP, {n} assets", lambda: pf.hrp_weights(c, corr), lambda: plain_hrp(c, corr), ours_name="hrp_weights",
        peer_name="plain scipy HRP", reps=3 * reps, goal={"max_ratio": 2.0}, gate=lambda: hrp_gate(r, c, corr)))
    def whole():
        mu_p, cov_p = plain_moments(r); return plain_cvxpy("min_variance", mu_p, cov_p, cap, sectors)
    out.append(harness.compare(
        BENCH, f"optimize() whole call, min variance, {n} assets", lambda: pf.optimize(r, "min_variance", **kw), whole,
        ours_name="optimize", peer_name="sklearn Ledoit-Wolf + plain cvxpy", reps=reps, goal=None,
        gate=lambda: f"max |dw| {np.abs(pf.optimize(r, 'min_variance', **kw).to_numpy() - whole()).max():.1e} (informational)"))
    return out


def measure(quick:bool) -> list[dict]:
    "Every portfolio case; `quick` runs fewer repetitions (a smoke test, not numbers to quote)."
    warnings.filterwarnings("ignore", category=UserWarning, module="cvxpy")
    reps = 3 if quick else 15
    return [row for n in (20, 200) for row in cases_for(n, reps)]


def main() -> int:
    print(harness.table(measure(False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

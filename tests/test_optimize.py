"""The optimizer's fast paths (traderbot.portfolio.optimize):

- `solve_convex` (cvxpy problems built once per shape, moments as Parameters) gives the weights of a plain
  per-call cvxpy problem (1e-7) and of riskfolio's `Portfolio.optimization` (1e-5: its second-order-cone form of
  the variance is the less precise of the three) for min variance, mean-variance, max Sharpe
  and a target return, under name caps and sector caps, and meets every constraint;
- a second solve of the same shape reuses the cached problem and uses the new moments;
- `hrp_weights` gives riskfolio's `HCPortfolio` weights (HRP, Pearson, single linkage, leaf order) to 1e-8, with
  and without binding bounds;
- a problem with no solution raises the ConfigError naming why, as before.
"""
from __future__ import annotations
import warnings

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest

from traderbot.core import ConfigError
from traderbot.portfolio import optimize as pf

KW = dict(rf=0.01, risk_aversion=4.0, target_return=0.15)


@pytest.fixture(scope="module")
def universe():
    "Seeded three-factor returns of 30 assets, Ledoit-Wolf moments, caps of 10 % a name and 30 % a sector."
    rng = np.random.default_rng(3)
    r = pd.DataFrame(rng.normal(0.0004, 0.01, (600, 3)) @ rng.normal(1, 0.4, (3, 30)) + rng.normal(0.0003, 0.012, (600, 30)),
                     index=pd.date_range("2020-01-01", periods=600, freq="B", tz="UTC"), columns=[f"S{i:02d}" for i in range(30)])
    sectors = pd.Series([f"sec{i % 4}" for i in range(30)], index=r.columns)
    spec = pf.weight_constraints(r.columns, bounds=(0.0, 0.1), sectors=sectors, sector_bounds={s: (0.0, 0.3) for s in sectors.unique()})
    mu, cov = pf.estimate(r)
    return r, mu, cov, spec


def plain(method, mu, cov, spec, rf, risk_aversion, target_return):
    "The problem written per call with quad_form (Charnes-Cooper by hand for Sharpe)."
    w = cp.Variable(len(mu)); k = cp.Variable(nonneg=True) if method == "max_sharpe" else 1.0
    cons = [cp.sum(w) == k, w >= spec.lower * k, w <= spec.upper * k, spec.A @ w <= spec.b * k]
    risk = cp.quad_form(w, cp.psd_wrap(cov.to_numpy()))
    if method == "max_sharpe": cons.append((mu.to_numpy() - rf) @ w == 1)
    if method == "target_return": cons.append(mu.to_numpy() @ w >= target_return)
    obj = cp.Maximize(mu.to_numpy() @ w - risk_aversion / 2 * risk) if method == "mean_variance" else cp.Minimize(risk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cp.Problem(obj, cons).solve(solver="CLARABEL", **pf._SOLVERS["CLARABEL"])
    return w.value / (k.value if method == "max_sharpe" else 1.0)


@pytest.mark.parametrize("method", ["min_variance", "mean_variance", "max_sharpe", "target_return"])
def test_solve_convex_matches_plain_cvxpy_and_riskfolio(universe, method):
    r, mu, cov, spec = universe
    w = pf.solve_convex(method, mu, cov, spec, **KW)
    assert spec.violations(w) == {}
    assert np.abs(w - plain(method, mu, cov, spec, **KW)).max() < 1e-7          # measured <= 3e-8
    assert np.abs(w - pf.riskfolio_convex(method, r, mu, cov, spec, **KW)).max() < 1e-5   # riskfolio's SOC form: up to 3e-6


def test_the_cached_problem_is_reused_with_new_moments(universe):
    r, mu, cov, spec = universe
    first = pf.solve_convex("max_sharpe", mu, cov, spec)
    hits = pf.convex_problem.cache_info().hits
    tilted = mu + np.linspace(0, 0.2, len(mu))
    second = pf.solve_convex("max_sharpe", tilted, cov, spec)
    assert pf.convex_problem.cache_info().hits == hits + 1
    assert np.abs(second - first).max() > 1e-2
    assert np.abs(second - plain("max_sharpe", tilted, cov, spec, 0.0, None, None)).max() < 1e-6


def test_turnover_budget_holds(universe):
    r, mu, cov, spec = universe
    current = pd.Series(1 / 30, index=r.columns)
    w = pf.optimize(r, "min_variance", bounds=(0.0, 0.1), current=current, max_turnover=0.3)
    assert (w - current).abs().sum() <= 0.3 + 1e-6


@pytest.mark.parametrize("bounded", [False, True])
def test_hrp_matches_riskfolio(universe, bounded):
    import riskfolio as rp
    r, mu, cov, spec = universe
    lo, hi = (np.full(30, 0.02), np.full(30, 0.045)) if bounded else (None, None)
    hc = rp.HCPortfolio(returns=r, w_min=None if lo is None else pd.Series(lo, r.columns), w_max=None if hi is None else pd.Series(hi, r.columns))
    with pf.quiet():
        ref = hc.optimization(model="HRP", codependence="pearson", rm="MV", method_cov="ledoit", linkage="single", leaf_order=True)
    ours = pf.hrp_weights(cov, np.corrcoef(r.to_numpy(), rowvar=False), lo, hi)
    assert np.abs(ours - ref["weights"].to_numpy()).max() < 1e-8


def test_no_solution_says_why(universe):
    r, mu, cov, spec = universe
    with pytest.raises(ConfigError, match="rf=5.0"): pf.optimize(r, "max_sharpe", rf=5.0)
    with pytest.raises(ConfigError, match="target_return=3.0"): pf.optimize(r, "target_return", target_return=3.0)
    with pytest.raises(ConfigError, match="the sectors can hold at most"):
        pf.optimize(r, "min_variance", sectors=pd.Series([f"sec{i % 4}" for i in range(30)], index=r.columns),
                    sector_bounds={f"sec{i}": (0, 0.2) for i in range(4)})

"""The sweep engine's contract (traderbot.research.sweep):

- parity: every combination's total return, Sharpe, max drawdown, entries and exposure equal vectorbt's
  `Portfolio.from_signals(close, entries.shift(1), exits.shift(1), fees, slippage, init_cash)` to 1e-12 relative, for
  both families, on the embedded sample and on synthetic series (with and without costs); the return moments equal
  `register_trial`'s (scipy) and the Sharpe and drawdown equal `performance`'s on vectorbt's returns;
- the answer does not depend on the chunk size the memory budget picks;
- bad input is refused with a one-line error naming the parameter, the symbol or the date;
- importing the module does not import numba, and a fresh process runs the kernels from numba's on-disk cache.
"""
from __future__ import annotations
import subprocess, sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from traderbot.core import ConfigError, CostModel, DataError
from traderbot.data.sample import load_closes
from traderbot.research.backtest import performance
from traderbot.research.registry import _return_moments
from traderbot.research.sweep import (_ROW_BYTES, _chunk_size, _rolling_tables, _zscore_table, band_signals, ma_crossover_signals,
                                      sweep, sweep_band, sweep_ma_crossover)

METRICS = ["total_return", "sharpe", "max_drawdown", "trades", "exposure"]


@pytest.fixture(scope="module")
def aapl():
    return load_closes(["AAPL"])["AAPL"]


def walk(seed: int, n: int = 1200, decimals: int = 2) -> pd.Series:
    "A random walk, rounded so that flat stretches make the averages tie now and then."
    rng = np.random.default_rng(seed)
    return pd.Series(100 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, n))), name=f"SYN{seed}").round(decimals)


def vectorbt_portfolio(close, signals, cost, init_cash):
    "One vectorbt portfolio with a column per combination of `signals` ({key: (entries, exits)}), traded a bar later."
    import vectorbt as vbt
    en = pd.DataFrame({i: v[0] for i, v in enumerate(signals.values())}).shift(1, fill_value=False)
    ex = pd.DataFrame({i: v[1] for i, v in enumerate(signals.values())}).shift(1, fill_value=False)
    px = pd.DataFrame({i: close for i in range(len(signals))})
    return vbt.Portfolio.from_signals(px, en, ex, fees=cost.fees, slippage=cost.slippage, init_cash=init_cash)


def check_parity(ours: pd.DataFrame, close, signals, cost, init_cash):
    pf = vectorbt_portfolio(close, signals, cost, init_cash)
    r = pf.returns()
    rec = pd.DataFrame(pf.orders.records)
    ref = pd.DataFrame({
        "total_return": pf.total_return().to_numpy(),
        "sharpe": (r.mean() / r.std() * np.sqrt(252)).to_numpy(),
        "max_drawdown": pf.max_drawdown().to_numpy(),
        "trades": rec[rec.side == 0].groupby("col").size().reindex(range(len(signals)), fill_value=0).to_numpy(),
        "exposure": (pf.assets() > 0).mean().to_numpy()})
    moved = (r.std() > 0).to_numpy()
    assert moved.sum() >= len(ours) // 2, "most combinations must trade, or the test proves little"
    for col in METRICS:
        a, b = ours[col].to_numpy(float), ref[col].to_numpy(float)
        a, b = (a[moved], b[moved]) if col == "sharpe" else (a, b)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=col)
    np.testing.assert_array_equal(ours.loc[~moved, "sharpe"], 0.0)   # a variant that never moved: Sharpe 0, as register_trial
    for k in np.flatnonzero(moved)[:5]:                                # the trial registry's moments and `performance`
        m, p = _return_moments(r[k]), performance(r[k])
        row = ours.iloc[k]
        assert row["n_obs"] == m["n_obs"]
        np.testing.assert_allclose([row["sharpe_period"], row["skew"], row["kurtosis"]], [m["sharpe"], m["skew"], m["kurtosis"]], rtol=1e-9)
        np.testing.assert_allclose([row["sharpe"], row["max_drawdown"]], [p["Sharpe"], p["max drawdown"]], rtol=1e-12)


@pytest.mark.parametrize("cost", [CostModel(fees=0.001, slippage=0.0005), CostModel(fees=0.0, slippage=0.0)])
def test_ma_crossover_matches_vectorbt_on_the_sample(aapl, cost):
    ours = sweep_ma_crossover(aapl, [3, 5, 10, 15, 20, 30], [20, 40, 60, 100, 150, 200], cost=cost)
    assert len(ours) == 34 and (ours.fast < ours.slow).all()
    check_parity(ours, aapl, {(f, s): ma_crossover_signals(aapl, f, s) for f, s in zip(ours.fast, ours.slow)}, cost, 1e6)


def test_band_matches_vectorbt_on_the_sample(aapl):
    cost = CostModel()
    ours = sweep_band(aapl, [10, 20, 40, 80], [1.0, 1.5, 2.0, 2.5], [-0.5, 0.0, 0.5], cost=cost)
    assert len(ours) == 4 * 4 * 3   # every exit_z is under every entry_z here and (ours.exit_z < ours.entry_z).all()
    check_parity(ours, aapl, {k: band_signals(aapl, *k) for k in zip(ours.window, ours.entry_z, ours.exit_z)}, cost, 1e6)


@pytest.mark.parametrize("seed", [1, 2])
def test_both_families_match_vectorbt_on_synthetic_walks(seed):
    close, cost = walk(seed, decimals=1), CostModel(fees=0.002, slippage=0.001)
    ma = sweep_ma_crossover(close, [1, 2, 4, 8], [3, 9, 27], cost=cost, init_cash=10_000)
    check_parity(ma, close, {(f, s): ma_crossover_signals(close, f, s) for f, s in zip(ma.fast, ma.slow)}, cost, 10_000)
    band = sweep_band(close, [5, 15, 45], [1.2, 1.8], [-1.0, 0.0, 1.0], cost=cost, init_cash=10_000)
    check_parity(band, close, {k: band_signals(close, *k) for k in zip(band.window, band.entry_z, band.exit_z)}, cost, 10_000)


def test_results_do_not_depend_on_the_chunk_size(aapl):
    fast, slow = list(range(2, 40, 3)), list(range(20, 200, 15))
    whole = sweep_ma_crossover(aapl, fast, slow)
    (means,) = _rolling_tables(aapl.to_numpy(), np.union1d(fast, slow))
    for rows in (1, 7, 50):
        budget = (means.nbytes + rows * _ROW_BYTES) / 2**20
        assert _chunk_size(means.nbytes, budget) == rows
        pd.testing.assert_frame_equal(sweep_ma_crossover(aapl, fast, slow, memory_mb=budget), whole, check_exact=True)
    zs = _zscore_table(aapl.to_numpy(), np.array([10, 30]))
    budget = (zs.nbytes + 5 * _ROW_BYTES) / 2**20
    pd.testing.assert_frame_equal(sweep_band(aapl, [10, 30], [1, 2, 3], [0, 0.5], memory_mb=budget),
                                  sweep_band(aapl, [10, 30], [1, 2, 3], [0, 0.5]), check_exact=True)


@pytest.mark.parametrize("call, error, text", [
    (lambda c: sweep_ma_crossover(c, fast=50, slow=20), ConfigError, "fast=[50], slow=[20]: no pair with fast < slow"),
    (lambda c: sweep_ma_crossover(c, fast=[5, 5.5], slow=20), ConfigError, "fast=5.5"),
    (lambda c: sweep_ma_crossover(c, fast=5, slow=10**6), ConfigError, "slow=1000000: must be a whole number from 2 to"),
    (lambda c: sweep_ma_crossover(c, fast=[], slow=20), ConfigError, "fast=[]"),
    (lambda c: sweep_ma_crossover(c * np.nan, fast=5, slow=20), DataError, "AAPL: close nan on 1990-01-02"),
    (lambda c: sweep_ma_crossover(c.where(c.index.year != 2001, -1.0), 5, 20), DataError, "AAPL: close -1.0 on 2001-01-02"),
    (lambda c: sweep_ma_crossover(c.to_frame(), 5, 20), DataError, "close: expected a pandas Series"),
    (lambda c: sweep_ma_crossover(c, 5, 20, init_cash=0), ConfigError, "init_cash=0"),
    (lambda c: sweep_ma_crossover(c, 5, 20, memory_mb=0.01), ConfigError, "memory_mb=0.01: the rolling tables alone need"),
    (lambda c: sweep_band(c, 20, entry_z=0.5, exit_z=1.0), ConfigError, "entry_z=[0.5], exit_z=[1.0]: no pair with exit_z < entry_z"),
    (lambda c: sweep_band(c, 20, entry_z=float("nan"), exit_z=0), ConfigError, "entry_z=nan"),
    (lambda c: sweep_band(c, 1, entry_z=2, exit_z=0), ConfigError, "window=1"),
    (lambda c: sweep(c, "momentum", {}), ConfigError, "strategy='momentum': unknown"),
    (lambda c: sweep(c, "ma_crossover", {"fast": 5, "slow": 20, "lookback": 3}), ConfigError, "unknown parameter(s) ['lookback']"),
    (lambda c: sweep(c, "band", {"window": 20, "entry_z": 2}), ConfigError, "missing parameter(s) ['exit_z']"),
])
def test_bad_input_is_refused_by_name(aapl, call, error, text):
    with pytest.raises(error) as e:
        call(aapl)
    assert text in str(e.value) and "\n" not in str(e.value)


def test_import_is_light_and_the_kernels_are_cached(aapl):
    sweep_ma_crossover(aapl.iloc[:300], 5, 20)          # compiled (or loaded) in this process: the cache exists now
    code = ("import sys, time; import traderbot.research.sweep as s; assert 'numba' not in sys.modules; "
            "from traderbot.data.sample import load_closes; c = load_closes(['AAPL'])['AAPL'].iloc[:300]; "
            "t = time.perf_counter(); s.sweep_ma_crossover(c, 5, 20); s.sweep_band(c, 20, 2, 0); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 3.0, f"a fresh process took {out.stdout.strip()} s: the kernels were recompiled, not loaded"

"""The momentum sweep's contract (traderbot.research.sweep_momentum):

- parity: every checked variant's total return, Sharpe, max drawdown, filled orders, exposure and number of returns
  equal `run_backtest(closes, weight_schedule(closes, ...), cost)` to 1e-12 relative, on the embedded sample with
  three later listings (NaN history) and on a synthetic panel with listings and price ties;
- the kernel's volatility is `momentum_signals`' to the bit, whichever memory layout the closes have;
- the answer does not depend on the chunk size the memory budget picks;
- bad input is refused with a one-line error naming the parameter, the symbol or the date;
- importing the module does not import numba.
"""
from __future__ import annotations
import subprocess, sys

import numpy as np
import pandas as pd
import pytest

from traderbot.core import ConfigError, CostModel, DataError
from traderbot.data.sample import load_closes
from traderbot.research.backtest import run_backtest
from traderbot.research.strategy import momentum_signals, weight_schedule
from traderbot.research.sweep_momentum import _PARAMS, _ROW_BYTES, _check_closes, _jit, _sums_pairwise, sweep_momentum

COST = CostModel(fees=0.001, slippage=0.0005)


@pytest.fixture(scope="module")
def listed():
    c = load_closes()
    for sym, day in (("AMD", "1995-06-01"), ("MSFT", "1993-03-01"), ("UNH", "2001-01-02")): c.loc[:day, sym] = np.nan
    return c


def synthetic(seed: int = 3, n: int = 900, k: int = 8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    px = np.round(40 * np.exp(np.cumsum(rng.normal(0.0005, 0.03, (n, k)), axis=0)) * 10) / 10
    df = pd.DataFrame(px, index=pd.bdate_range("2015-01-01", periods=n, tz="UTC"), columns=[f"S{i}" for i in range(k)])
    df.iloc[:150, 2] = np.nan; df.iloc[:500, 5] = np.nan
    return df


def reference(closes, row, cost, init_cash):
    p = {k: float(row[k]) if k.startswith("max_") else int(row[k]) for k in _PARAMS}
    pf = run_backtest(closes, weight_schedule(closes, p.pop("rebalance_every"), **p), cost, init_cash)
    r = pf.returns()
    sr = 0.0 if r.std() == 0 else r.mean() / r.std()
    return {"total_return": pf.total_return(), "sharpe": sr * np.sqrt(252), "max_drawdown": pf.max_drawdown(),
            "trades": len(pf.orders.records), "exposure": float((pf.asset_value() > 0).mean()), "n_obs": len(r)}


def check(ours, closes, rows, cost, init_cash=1e6):
    for i in rows:
        for name, want in reference(closes, ours.iloc[i], cost, init_cash).items():
            got = float(ours.iloc[i][name])
            assert got == want or abs(got - want) <= 1e-12 * abs(want), (i, name, got, want)


def test_parity_on_the_sample_with_listings(listed):
    ours = sweep_momentum(listed, lookback=[126, 252], skip=[0, 21], top_n=[2, 5], rebalance_every=[10, 21], cost=COST)
    assert len(ours) == 16 and list(ours.columns[:7]) == list(_PARAMS)
    check(ours, listed, [0, 13], COST)


def test_parity_on_a_synthetic_panel():
    syn = synthetic()
    ours = sweep_momentum(syn, lookback=[30, 90], skip=[0, 5], top_n=[1, 3], rebalance_every=[1, 6], vol_lookback=[10, 140],
                          max_volatility=[0.5, 2.0], max_weight=[0.3, 1.0], cost=COST, init_cash=1e4)
    check(ours, syn, [0, 46, 99, 120], COST, 1e4)
    free = sweep_momentum(syn, lookback=60, skip=5, top_n=3, rebalance_every=5, max_volatility=5.0, cost=CostModel(0.0, 0.0))
    check(free, syn, [0], CostModel(0.0, 0.0))


@pytest.mark.parametrize("blocks", [False, True])
def test_volatility_is_momentum_signals_to_the_bit(listed, blocks):
    frame = pd.concat([listed[[c]] for c in listed], axis=1) if blocks else listed
    px = _check_closes(frame)
    rets = np.ascontiguousarray((px[1:] / px[:-1] - 1).T)
    vol = np.empty(px.shape)
    _jit().vol_table(rets, 63, _sums_pairwise(frame), np.ones(len(px), bool), vol)
    for s in range(400, len(px), 251):
        ref = momentum_signals(frame, frame.index[s], lookback=252, skip=21, vol_lookback=63).volatility.to_numpy()
        assert np.array_equal(vol[s], ref, equal_nan=True)


def test_chunks_do_not_change_the_answer():
    syn = synthetic(5)
    grid = dict(lookback=[20, 60], skip=[0, 5], top_n=[1, 2, 4], rebalance_every=[3, 7], cost=COST)
    full = sweep_momentum(syn, **grid)
    px = _check_closes(syn)
    tables = px.nbytes * 4 + px.nbytes // 2                    # closes, filled closes, returns, one volatility table, run lengths
    tiny = sweep_momentum(syn, **grid, memory_mb=(tables + 2 * _ROW_BYTES) / 2**20 + 1e-3)
    pd.testing.assert_frame_equal(tiny, full)


def test_bad_input_is_refused_by_name(listed):
    ok = dict(lookback=252, skip=21, top_n=5, rebalance_every=21)
    with pytest.raises(ConfigError, match=r"lookback=\[21\], skip=\[21\]: no pair with skip < lookback"):
        sweep_momentum(listed, **{**ok, "lookback": 21, "skip": 21})
    for name, bad in (("top_n", 0), ("rebalance_every", 2.5), ("vol_lookback", 1), ("lookback", 10**6), ("max_weight", 1.5), ("max_volatility", 0)):
        with pytest.raises(ConfigError, match=name):
            sweep_momentum(listed, **{**ok, name: bad})
    with pytest.raises(ConfigError, match="memory_mb=0.01"):
        sweep_momentum(listed, **ok, memory_mb=0.01)
    broken = listed.copy(); broken.iloc[10, 0] = 0.0
    with pytest.raises(DataError, match="AAPL: close 0.0 on 1990-01-16"):
        sweep_momentum(broken, **ok)
    with pytest.raises(DataError, match="expected a pandas DataFrame"):
        sweep_momentum(listed["AAPL"], **ok)


def test_import_does_not_import_numba():
    code = "import sys, traderbot.research.sweep_momentum; print('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"

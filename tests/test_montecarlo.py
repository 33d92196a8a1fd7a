"""research.montecarlo and research.multistrategy: the promises the CLI's `backtest --strategies ... --monte-carlo N` relies on."""
from __future__ import annotations
import math

import numpy as np
import pandas as pd
import pytest

from traderbot.core import ConfigError
from traderbot.research.montecarlo import METRICS, montecarlo_report, reshuffle_trades, stationary_bootstrap
from traderbot.research.multistrategy import backtest_strategies, parse_strategies


def test_same_seed_same_intervals_other_seed_other():
    r = pd.Series(np.random.default_rng(0).normal(0.0004, 0.01, 800))
    a = montecarlo_report(r, r.to_numpy()[::10], sims=200, seed=11)
    pd.testing.assert_frame_equal(a.table(), montecarlo_report(r, r.to_numpy()[::10], sims=200, seed=11).table())
    assert not a.table().equals(montecarlo_report(r, r.to_numpy()[::10], sims=200, seed=12).table())


def test_bootstrap_sharpe_interval_covers_truth_and_shrinks():
    mu, sd = 0.0005, 0.01
    truth = mu / sd * math.sqrt(252)
    widths = []
    for T in (1000, 4000):
        tb = stationary_bootstrap(pd.Series(np.random.default_rng(T).normal(mu, sd, T)), sims=1500, block=5, seed=3).table()
        lo, hi = tb.loc[("stationary bootstrap", "Sharpe"), ["5%", "95%"]]
        assert lo <= truth <= hi
        widths.append(hi - lo)
    assert 1.7 < widths[0] / widths[1] < 2.3


def test_reshuffle_keeps_total_return_and_finds_the_planted_drawdown():
    tr = np.r_[-0.30, np.tile([0.03, 0.03, 0.03, -0.04], 10)]
    res = reshuffle_trades(tr, sessions=504, sims=1000, seed=0)
    s = res.samples["trade reshuffle"]
    np.testing.assert_allclose((1 + s["CAGR"]) ** 2, np.prod(1 + tr), rtol=1e-12)
    assert (s["max drawdown"] <= -0.30 + 1e-12).all()
    assert res.observed["trade reshuffle"]["max drawdown"] == pytest.approx(-0.30, abs=1e-12)
    assert list(res.table().columns) == ["5%", "50%", "95%", "observed"]
    assert list(res.table().index.get_level_values(1)) == list(METRICS)


def test_opposite_sleeves_net_to_no_trading():
    idx = pd.date_range("2020-01-01", periods=60, freq="B", tz="UTC")
    px = pd.DataFrame({"A": np.linspace(10, 20, 60), "B": np.linspace(20, 10, 60)}, index=idx)
    w = pd.DataFrame(np.nan, index=idx, columns=px.columns)
    w.iloc[::10] = [[0.5, 0.3], [0.2, 0.6], [0.0, 0.4], [0.4, 0.0], [0.1, 0.1], [0.3, 0.3]]
    res = backtest_strategies(px, {"x": w, "y": -w}, {"x": 0.5, "y": 0.5})
    assert res.attribution.at["combined", "traded"] == 0.0
    assert res.netting_saving == pytest.approx(res.attribution.at["sum of sleeves", "costs"]) and res.netting_saving > 0
    with pytest.raises(ConfigError, match="unknown sleeve 'z'"): backtest_strategies(px, {"x": w}, {"z": 1.0})
    with pytest.raises(ConfigError, match="unknown strategy 'carry'"): parse_strategies("momentum:0.5,carry:0.5")

"""Event studies and the honest IC statistics on synthetic data with known answers.

A planted +1 % / -1 % day-0 abnormal return must be found with the right signs; no plant, no finding; a
shock common to the events of one date must widen the date-clustered standard error; an IC series over
5-session overlapping labels must get a Newey-West t about half its iid t and fail the Ljung-Box test.
"""
from __future__ import annotations
import math

import numpy as np
import pandas as pd
import pytest

from traderbot.core import ConfigError, DataError
from traderbot.research.events import event_study, market_model
from traderbot.research.stats import hac_t_stat, information_coefficient, ljung_box

EFFECT = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}


def synthetic(seed, effect=0.01, n_events=360, shock_dates=None, n_sessions=600, n_symbols=60):
    "Returns, market and events on distinct (symbol, session) pairs; `effect` planted on day 0 by bucket."
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2020-01-01", periods=n_sessions, tz="UTC")
    syms = [f"S{k:02d}" for k in range(n_symbols)]
    mkt = pd.Series(rng.normal(0.0003, 0.01, n_sessions), idx)
    x = np.outer(mkt, rng.uniform(0.5, 1.5, n_symbols)) + rng.normal(0, 0.02, (n_sessions, n_symbols))
    if shock_dates is None:
        pairs = rng.choice((n_sessions - 270) * n_symbols, n_events, replace=False)
        pos, col = 260 + pairs // n_symbols, pairs % n_symbols
    else:
        per = n_events // shock_dates
        pos = np.repeat(rng.choice(np.arange(260, n_sessions - 10), shock_dates, replace=False), per)
        col = np.concatenate([rng.choice(n_symbols, per, replace=False) for _ in range(shock_dates)])
        x[pos, col] += np.repeat(rng.normal(0, 0.02, shock_dates), per)      # a shock the market does not carry
    bucket = np.array(["positive", "negative", "neutral"])[np.arange(len(pos)) % 3]
    x[pos, col] += effect * np.vectorize(EFFECT.get)(bucket)
    events = pd.DataFrame({"symbol": np.array(syms)[col], "session": idx[pos], "bucket": bucket, "source": "synthetic"})
    return pd.DataFrame(x, idx, syms), mkt, events


def test_market_model_matches_statsmodels_ols():
    sm = pytest.importorskip("statsmodels.api")
    ret, mkt, _ = synthetic(0)
    a, b, s = market_model(ret["S03"], mkt, (ret.index[0], ret.index[249]))
    ref = sm.OLS(ret["S03"].iloc[:250], sm.add_constant(mkt.iloc[:250])).fit()
    assert np.allclose((a, b, s), (*ref.params, math.sqrt(ref.mse_resid)), rtol=0, atol=1e-12)


def test_planted_effect_is_found_with_the_right_signs():
    s = event_study(*synthetic(1)).summary("bucket").loc["[0,0]"]
    assert s.loc["positive", "t_stat"] > 3 and s.loc["negative", "t_stat"] < -3
    assert abs(s.loc["positive", "mean_car"] - 0.01) < 0.005 and abs(s.loc["negative", "mean_car"] + 0.01) < 0.005
    assert s.loc["neutral", "p_value"] > 0.05
    assert (s.n == 120).all()


def test_no_effect_finds_nothing():
    s = event_study(*synthetic(1, effect=0.0)).summary("bucket")
    assert (s.p_value > 0.05).all(), s


def test_clustering_by_date_widens_the_error_under_a_common_shock():
    res = event_study(*synthetic(2, effect=0.0, shock_dates=12))
    clus, hc1 = res.summary(None).loc[("[0,0]", "all")], res.summary(None, cluster=False).loc[("[0,0]", "all")]
    assert clus.n_dates == 12 and clus.se > 2 * hc1.se
    # without shared dates the two agree closely
    res1 = event_study(*synthetic(1, effect=0.0))
    ratio = res1.summary(None).loc[("[0,0]", "all"), "se"] / res1.summary(None, cluster=False).loc[("[0,0]", "all"), "se"]
    assert 0.85 < ratio < 1.15


def test_events_without_estimation_data_are_dropped_and_counted():
    ret, mkt, ev = synthetic(1)
    extra = pd.DataFrame({"symbol": ["S00", "ZZZ"], "session": [ret.index[50], ret.index[300]], "bucket": "neutral", "source": "x"}, index=[900, 901])
    res = event_study(ret, mkt, pd.concat([ev, extra]))
    assert list(res.dropped.index) == [900, 901] and len(res.events) == len(ev)
    assert "estimation sessions" in res.dropped.loc[900, "reason"]
    with pytest.raises(ConfigError, match="estimation"): event_study(ret, mkt, ev, estimation=(-250, 0))
    with pytest.raises(DataError, match="symbol"): event_study(ret, mkt, ev.drop(columns="symbol"))


def test_hac_t_is_about_half_and_ljung_box_detects_overlap():
    h, n = 5, 2000
    shocks = np.random.default_rng(13).standard_normal(n + h - 1)
    ic = pd.Series(0.02 + 0.1 * np.convolve(shocks, np.ones(h) / h, mode="valid"))
    t_iid = ic.mean() / (ic.std(ddof=1) / math.sqrt(n))
    assert 0.3 < hac_t_stat(ic, h - 1) / t_iid < 0.65
    assert ljung_box(ic, 10).p_value < 1e-10
    assert ljung_box(np.random.default_rng(14).standard_normal(n), 10).p_value > 0.05


def test_information_coefficient_reports_both_t_statistics():
    idx = pd.MultiIndex.from_product([pd.date_range("2020-01-01", periods=200, tz="UTC"), list("ABCDEFGH")], names=["timestamp", "symbol"])
    rng = np.random.default_rng(3)
    realized = pd.Series(rng.standard_normal(len(idx)), idx)
    pred = realized * 0.3 + pd.Series(rng.standard_normal(len(idx)), idx)
    ic = information_coefficient(pred, realized, horizon=5)
    assert ic.t_stat == ic.t_stat_iid and ic.hac_lags == 4
    assert math.isclose(ic.t_stat_hac, hac_t_stat(ic.by_date, 4), rel_tol=1e-12)
    assert math.isnan(information_coefficient(pred, realized).t_stat_hac)

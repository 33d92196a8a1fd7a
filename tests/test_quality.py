"""The data quality gates (catalogue B5, B6, B8, B10) on altered copies of the embedded real sample.

Each test takes the sample's real closes, breaks one thing the way a real feed breaks it (a frozen price, an
unadjusted split, a dropped session, a NaN, a zero, a duplicated or misplaced row, naive or local-midnight keys),
and checks that `check_bars` blames that symbol alone, with the right code and a detail naming the symbol, the
date and the value; and that the untouched sample passes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traderbot.config import QualitySettings
from traderbot.core import DataError
from traderbot.data.bars import INDEX_NAMES, bars_from_closes
from traderbot.data.providers.base import ACTION_COLUMNS, actions_frame
from traderbot.data.quality import CHECKS, FINDING_COLUMNS, QualityReport, check_bars, splits_between
from traderbot.data.sample import load_bars, load_ohlcv

DAY = pd.Timestamp("2022-12-28", tz="UTC")


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars(start="2022-01-01")           # a year of the 20 stocks' real closes is plenty for a 60-session window


@pytest.fixture(scope="module")
def wide(bars) -> pd.DataFrame:
    return bars["close"].unstack("symbol")


def only(report:QualityReport) -> dict[str, list[str]]:
    "Each failing symbol's checks, in severity order."
    return report.findings.groupby("symbol", sort=False)["check"].apply(list).to_dict()


def at(day:str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


# (f) the untouched sample ---------------------------------------------------------------------------------
def test_untouched_sample_passes(bars):
    rep = check_bars(bars, DAY, "XNYS", None, QualitySettings())
    assert list(rep.findings.columns) == FINDING_COLUMNS and rep.findings.empty
    assert (rep.failing, rep.stop_reason, rep.benchmark_failed) == ({}, None, False)
    assert rep.checked == sorted(bars.index.get_level_values("symbol").unique()) and len(rep.passed) == 20
    assert rep.summary() == "2022-12-28: 20 symbols checked, all passed"


def test_untouched_ohlcv_passes():
    ohlcv = load_ohlcv(None, start="2012-06-01")   # four stocks' real OHLCV: every price field is checked
    rep = check_bars(ohlcv, "2013-03-01")
    assert rep.failing == {} and len(rep.checked) == 4


# (a) a frozen feed ----------------------------------------------------------------------------------------
def test_frozen_close_is_stale_data_for_that_symbol_only(wide):
    w = wide.copy()
    last10 = w.index[w.index <= DAY][-10:]
    value = w.loc[last10[0], "XOM"]
    w.loc[last10, "XOM"] = value
    rep = check_bars(bars_from_closes(w), DAY)
    assert only(rep) == {"XOM": ["frozen"]}
    code, detail = rep.failing["XOM"].split(": ", 1)
    assert code == "STALE_DATA"
    assert detail == f"XOM: close {round(value, 6)} unchanged for 10 sessions from {last10[0].date()} to 2022-12-28"
    assert rep.findings.session.iloc[0] == DAY and rep.stop_reason is None and "XOM" not in rep.passed


def test_four_equal_closes_are_not_frozen_five_are(wide):
    w = wide.copy()
    w.loc[w.index[-4:], "KO"] = w["KO"].iloc[-4]
    assert check_bars(bars_from_closes(w), DAY).failing == {}
    w.loc[w.index[-5:], "KO"] = w["KO"].iloc[-5]
    assert only(check_bars(bars_from_closes(w), DAY)) == {"KO": ["frozen"]}


def test_symbol_behind_is_stale(bars):
    rep = check_bars(bars.drop(index=[(DAY, "JPM"), (at("2022-12-27"), "JPM")]), DAY)
    assert only(rep) == {"JPM": ["stale"]}
    assert rep.failing["JPM"] == "STALE_DATA: JPM: last bar 2022-12-23, none for 2022-12-28 (2 sessions behind)"


def test_symbol_in_universe_without_bars_is_no_data(bars):
    rep = check_bars(bars, DAY, symbols=["AAPL", "MSFT", "NVDA"])
    assert rep.checked == ["AAPL", "MSFT", "NVDA"] and only(rep) == {"NVDA": ["no_data"]}
    assert rep.failing["NVDA"].startswith("STALE_DATA: NVDA: no bar in the 60 XNYS sessions from 2022-10-04 to 2022-12-28")


# (b) an unadjusted split --------------------------------------------------------------------------------
def test_unadjusted_split_is_a_jump_unless_the_split_is_known(wide):
    w = wide.copy()
    w.loc[w.index >= at("2022-12-01"), "CVX"] /= 2                      # CVX fell 0.45% that day: the raw close moves -50.2%
    halved = bars_from_closes(w)
    rep = check_bars(halved, DAY)
    assert only(rep) == {"CVX": ["jump"]}
    assert rep.failing["CVX"].startswith("DATA_QUALITY: CVX: close moved -50.2% on 2022-12-01 (") and "no split that day" in rep.failing["CVX"]
    split = actions_frame([{"symbol": "CVX", "ex_date": "2022-12-01", "kind": "split", "ratio": 2}], "test")
    assert check_bars(halved, DAY, actions=split).failing == {}
    wrong = actions_frame([{"symbol": "CVX", "ex_date": "2022-12-01", "kind": "split", "ratio": 3}], "test")
    assert "a split of ratio 3.0 expects -66.7%" in check_bars(halved, DAY, actions=wrong).failing["CVX"]
    elsewhere = actions_frame([{"symbol": "XOM", "ex_date": "2022-12-01", "kind": "split", "ratio": 2}], "test")
    assert only(check_bars(halved, DAY, actions=elsewhere)) == {"CVX": ["jump"]}


def test_an_unadjusted_split_on_an_up_day_is_caught_by_the_default_max_jump(wide):
    # |r| > max_jump, as QualitySettings documents it: a 2-for-1 on a day CVX rose 0.8% moves the raw close -49.6%,
    # which a 50% threshold would let through; the default of 40% catches it (the sample has one move beyond 40% since 2001).
    w = wide.copy()
    w.loc[w.index >= at("2022-11-15"), "CVX"] /= 2
    assert check_bars(bars_from_closes(w), DAY, settings=QualitySettings(max_jump=0.5)).failing == {}
    rep = check_bars(bars_from_closes(w), DAY)
    assert only(rep) == {"CVX": ["jump"]} and "-49.6% on 2022-11-15" in rep.failing["CVX"]
    split = actions_frame([{"symbol": "CVX", "ex_date": "2022-11-15", "kind": "split", "ratio": 2}], "test")
    assert check_bars(bars_from_closes(w), DAY, actions=split).failing == {}
    assert check_bars(load_bars(start="2022-01-01"), DAY).failing == {}


def test_reverse_split_is_explained_by_its_ratio(wide):
    w = wide.copy()
    w.loc[w.index >= at("2022-12-01"), "GE"] *= 10      # 1-for-10: ratio 0.1 new shares per old
    reverse = actions_frame([{"symbol": "GE", "ex_date": "2022-12-01", "kind": "split", "ratio": 0.1}], "test")
    assert only(check_bars(bars_from_closes(w), DAY)) == {"GE": ["jump"]}
    assert check_bars(bars_from_closes(w), DAY, actions=reverse).failing == {}


# (c) a dropped session --------------------------------------------------------------------------------------
def test_dropped_session_is_missing_for_that_symbol(bars):
    rep = check_bars(bars.drop(index=(at("2022-12-20"), "AAPL")), DAY)
    assert only(rep) == {"AAPL": ["missing_sessions"]}
    assert rep.failing["AAPL"] == ("DATA_QUALITY: AAPL: 1 XNYS session missing from 2022-10-04 to 2022-12-28 "
                                   "(at most 0 allowed): 2022-12-20")
    assert check_bars(bars.drop(index=(at("2022-12-20"), "AAPL")), DAY, settings=QualitySettings(max_missing_sessions=1)).failing == {}


# (d) broken rows --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field_value, check, detail", [
    (np.nan, "non_finite", "AMD: close is nan on 2022-12-21"),
    (np.inf, "non_finite", "AMD: close is inf on 2022-12-21"),
    (0.0, "non_positive", "AMD: close is 0.0 on 2022-12-21"),
    (-3.5, "non_positive", "AMD: close is -3.5 on 2022-12-21"),
])
def test_bad_value_is_reported_for_that_symbol_only(bars, field_value, check, detail):
    b = bars.copy()
    b.loc[(at("2022-12-21"), "AMD"), "close"] = field_value
    rep = check_bars(b, DAY)
    assert only(rep) == {"AMD": [check]} and rep.failing["AMD"] == f"DATA_QUALITY: {detail}"


def test_bad_ohlcv_field_is_named():
    b = load_ohlcv(None, start="2012-06-01").copy()
    b.loc[(at("2013-02-26"), "IBM"), "low"] = np.nan
    rep = check_bars(b, "2013-03-01")
    assert only(rep) == {"IBM": ["non_finite"]} and rep.failing["IBM"] == "DATA_QUALITY: IBM: low is nan on 2013-02-26"


def test_duplicate_row_is_reported_for_that_symbol_only(bars):
    i = bars.index.get_loc((at("2022-12-21"), "BBY"))
    b = pd.concat([bars.iloc[:i + 1], bars.iloc[[i]], bars.iloc[i + 1:]])   # the same row twice, in place
    rep = check_bars(b, DAY)
    assert only(rep) == {"BBY": ["duplicate"]} and rep.failing["BBY"] == "DATA_QUALITY: BBY: more than one row for 2022-12-21"


def test_unsorted_rows_are_reported_for_that_symbol_only(bars):
    i, j = bars.index.get_loc((at("2022-12-20"), "HD")), bars.index.get_loc((at("2022-12-22"), "HD"))
    order = np.arange(len(bars))
    order[i], order[j] = j, i                                        # HD's 12-22 row where its 12-20 row was
    rep = check_bars(bars.iloc[order], DAY)
    assert only(rep) == {"HD": ["unsorted"]}
    assert rep.failing["HD"] == ("DATA_QUALITY: HD: the row for 2022-12-21 comes after the row for 2022-12-22: not in time order"
                                 " (and 1 more row)")                # 22, 21, 20: two steps back


def test_naive_index_fails_every_symbol(bars):
    b = bars.copy()
    b.index = b.index.set_levels(b.index.levels[0].tz_localize(None), level="timestamp")
    rep = check_bars(b, DAY)
    assert set(rep.failing) == set(rep.checked) and all(c == ["naive_timestamp"] for c in only(rep).values())
    assert rep.failing["XOM"].startswith("DATA_QUALITY: XOM: timestamp 2022-10-04 00:00:00 has no time zone")
    assert rep.stop_reason.startswith("20 of 20 symbols failed the data checks (more than 50%)")


def test_naive_rows_of_one_symbol_fail_that_symbol_only(bars):
    df = bars.reset_index()
    df["timestamp"] = [t.tz_localize(None) if s == "PEP" else t for t, s in zip(df["timestamp"], df["symbol"])]
    b = df.set_index(INDEX_NAMES)                                      # a careless concat: an object level
    assert b.index.get_level_values("timestamp").dtype == object
    assert only(check_bars(b, DAY)) == {"PEP": ["naive_timestamp"]}


# B8: DST days -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("day, change", [("2022-03-31", "2022-03-13"), ("2022-11-30", "2022-11-06")])
def test_dst_changes_are_no_missing_session_and_local_midnight_is_flagged(bars, day, change):
    rep = check_bars(bars, day)
    assert rep.failing == {}                                            # the window spans the DST change
    b = bars.reset_index()
    pg = b["symbol"] == "PG"
    local = b.loc[pg, "timestamp"].dt.tz_localize(None).dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    assert {t.hour for t in local[local.dt.normalize() < at(change)]} | {t.hour for t in local[local.dt.normalize() > at(change)]} == {4, 5}
    b["timestamp"] = b["timestamp"].astype(object)
    b.loc[pg, "timestamp"] = list(local)
    rep = check_bars(b.set_index(INDEX_NAMES), day)
    assert only(rep) == {"PG": ["off_session", "no_data"]}            # keyed at 04:00/05:00 UTC: not a session key
    assert rep.failing["PG"].startswith("DATA_QUALITY: PG: timestamp 20") and "is not a XNYS session key" in rep.failing["PG"]


def test_bar_on_a_holiday_is_off_session(bars):
    b = pd.concat([bars, bars.xs(at("2022-12-23"), level="timestamp", drop_level=False).loc[[(at("2022-12-23"), "WMT")]]
                   .rename(index={at("2022-12-23"): at("2022-12-26")})]).sort_index()   # Christmas observed
    rep = check_bars(b, DAY)
    assert only(rep) == {"WMT": ["off_session"]}
    assert "2022-12-26 00:00:00+00:00 is not a XNYS session key" in rep.failing["WMT"]


def test_run_on_a_holiday_is_refused(bars):
    with pytest.raises(DataError, match="2022-12-26 is not a XNYS session"): check_bars(bars, "2022-12-26")
    with pytest.raises(DataError, match="indexed by"): check_bars(bars.reset_index(), DAY)


# (e) stopping the run ----------------------------------------------------------------------------------------
def test_six_of_ten_failing_stops_the_run_five_does_not(wide):
    ten = list(wide.columns[:10])
    w = wide[ten].copy()
    w.loc[DAY, ten[:5]] = np.nan                                         # five symbols with a NaN close today
    rep = check_bars(bars_from_closes(w), DAY)
    assert len(rep.failing) == 5 and rep.stop_reason is None
    w.loc[DAY, ten[5]] = 0.0
    rep = check_bars(bars_from_closes(w), DAY)
    assert len(rep.failing) == 6
    assert rep.stop_reason == f"6 of 10 symbols failed the data checks (more than 50%): {', '.join(ten[:6])}"
    assert rep.summary().endswith(f"; run stopped: {rep.stop_reason}")


def test_failing_benchmark_stops_the_run(bars, wide):
    spy = wide["KO"].rename("SPY")                                       # any real series will do
    rep = check_bars(bars, DAY, benchmark=spy)
    assert (rep.benchmark_failed, rep.stop_reason, rep.checked[-1], len(rep.passed)) == (False, None, "SPY", 20)
    rep = check_bars(bars, DAY, benchmark=spy.drop(DAY))
    assert rep.benchmark_failed and list(rep.failing) == ["SPY"]
    assert rep.stop_reason == "benchmark SPY: last bar 2022-12-27, none for 2022-12-28 (1 session behind)"
    rep = check_bars(bars, DAY, benchmark="XOM")                         # a symbol of the frame as benchmark
    assert rep.checked[-1] == "XOM" and len(rep.checked) == 20 and rep.stop_reason is None
    assert check_bars(bars.drop(index=(DAY, "XOM")), DAY, benchmark="XOM").stop_reason.startswith("benchmark XOM: last bar 2022-12-27")


# B10: splits between runs --------------------------------------------------------------------------------------
def test_splits_between_runs_are_applied_once():
    acts = actions_frame([{"symbol": "AAPL", "ex_date": "2020-08-31", "kind": "split", "ratio": 4},
                          {"symbol": "TSLA", "ex_date": "2020-08-31", "kind": "split", "ratio": 5},
                          {"symbol": "AAPL", "ex_date": "2020-08-07", "kind": "dividend", "cash": 0.82},
                          {"symbol": "GE", "ex_date": "2021-08-02", "kind": "split", "ratio": 0.125}], "test")
    due = splits_between(acts, "2020-08-28", "2020-08-31", ["AAPL", "MSFT"])
    assert list(due.columns) == ACTION_COLUMNS and due[["symbol", "ratio"]].values.tolist() == [["AAPL", 4.0]]
    assert splits_between(acts, "2020-08-31", "2020-09-01").empty                   # the next run does not apply it again
    assert splits_between(acts, "2020-08-27", "2021-08-02").symbol.tolist() == ["AAPL", "TSLA", "GE"]   # missed runs: all of them
    assert splits_between(acts, None, "2020-08-30").empty
    with pytest.raises(DataError, match="missing ratio"): splits_between(acts.drop(columns="ratio"), None, "2021-01-04")


# a wide universe (its speed is measured in bench/, not asserted here) ------------------------------------------------
def test_500_symbols_over_a_year_are_each_checked(wide):
    rng = np.random.default_rng(7)
    w = pd.DataFrame(np.tile(wide.to_numpy(), 25) * rng.uniform(0.5, 2, 500), index=wide.index,
                     columns=[f"S{i:03d}" for i in range(500)])
    w.iloc[-8:, 123] = w.iloc[-9, 123]                                    # one frozen name among 500
    rep = check_bars(bars_from_closes(w), DAY)
    assert len(rep.checked) == 500 and list(rep.failing) == ["S123"] and rep.failing["S123"].startswith("STALE_DATA")


def test_checks_are_the_documented_ones():
    assert set(CHECKS) == {"missing_sessions", "frozen", "stale", "jump", "non_finite", "non_positive", "naive_timestamp",
                           "duplicate", "unsorted", "no_data", "off_session"}

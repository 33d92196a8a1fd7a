"""Alternative data: nothing is visible before it was published.

Each test states a visibility fact against the NYSE's real closes (21:00 UTC in winter, 20:00 UTC in summer,
18:00 UTC on the day after Thanksgiving): a value one minute past a session's close is seen only from the next
session, a lag shifts that by its length, a revision counts from its own publication, the research leakage
auditor passes on the alt features and catches a rule that peeks at `as_of`, and bad files are refused naming
file, line and field.
"""
from __future__ import annotations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traderbot.core import ConfigError, DataError
from traderbot.data.calendar import session_close, signal_session
from traderbot.news.altdata import alt_feature_fns, alt_features, read_alt, visible_at
from traderbot.research.features import assert_no_leakage, audit_leakage, feature_panel

UTC = "UTC"


def ts(s): return pd.Timestamp(s, tz=UTC)
def sessions(*days): return pd.DatetimeIndex(list(days), tz=UTC)


def write(tmp_path: Path, rows: list[str], name="esg.csv", header="symbol,published_at,value,as_of") -> Path:
    f = tmp_path / name
    f.write_text(header + "\n" + "\n".join(rows) + "\n")
    return f


def one(alt, day, symbol="AAPL", series="esg", **kw) -> float:
    return float(visible_at(alt, sessions(day), **kw).loc[(ts(day), symbol), series])


def test_a_value_one_minute_after_the_close_is_seen_only_from_the_next_session(tmp_path):
    close = session_close("2024-03-05")                                      # 21:00 UTC (EST)
    assert close == ts("2024-03-05 21:00")
    alt = read_alt(write(tmp_path, [f"AAPL,{(close - pd.Timedelta('1min')).isoformat()},1,q",
                                    f"MSFT,{close.isoformat()},2,q",
                                    f"NVDA,{(close + pd.Timedelta('1min')).isoformat()},3,q"]))
    v = visible_at(alt, sessions("2024-03-05", "2024-03-06")).unstack("symbol")["esg"]
    assert v.loc[ts("2024-03-05")].tolist()[:2] == [1.0, 2.0]                # before or at the close: that session
    assert np.isnan(v.loc[ts("2024-03-05"), "NVDA"])                         # one minute after: not that session ...
    assert v.loc[ts("2024-03-06"), "NVDA"] == 3.0                            # ... but the next


def test_the_daily_run_for_a_day_sees_only_what_was_public_at_the_previous_close(tmp_path):
    px = pd.DataFrame({"AAPL": [170.0, 171.0, 172.0]}, index=sessions("2024-03-04", "2024-03-05", "2024-03-06"))
    alt = read_alt(write(tmp_path, ["AAPL,2024-03-04T20:00:00Z,1,q", "AAPL,2024-03-05T14:00:00Z,2,q"]))
    row = signal_session(px, ts("2024-03-06"))                                # the run for 03-06 reads 03-05's row
    assert row == ts("2024-03-05")
    assert alt_features(alt, px).loc[(row, "AAPL"), "alt_esg"] == 2.0        # published during 03-05, before its close
    assert alt_features(alt, px.iloc[:2]).loc[(ts("2024-03-04"), "AAPL"), "alt_esg"] == 1.0


def test_a_lag_of_one_day_shifts_visibility_by_a_day(tmp_path):
    alt = read_alt(write(tmp_path, ["AAPL,2024-03-05T15:00:00Z,7,q", "MSFT,2024-03-08T15:00:00Z,8,q"]))   # a Tuesday, a Friday
    assert one(alt, "2024-03-05") == 7.0
    assert np.isnan(one(alt, "2024-03-05", lag="1D"))
    assert one(alt, "2024-03-06", lag="1D") == 7.0
    assert one(alt, "2024-03-08", symbol="MSFT") == 8.0
    assert np.isnan(one(alt, "2024-03-08", symbol="MSFT", lag=pd.Timedelta(days=1)))
    assert one(alt, "2024-03-11", symbol="MSFT", lag=pd.Timedelta(days=1)) == 8.0   # Saturday 15:00 -> Monday's session
    with pytest.raises(ConfigError, match="look ahead"): visible_at(alt, sessions("2024-03-05"), lag="-1D")


def test_a_revision_is_visible_only_from_its_publication(tmp_path):
    alt = read_alt(write(tmp_path, ["AAPL,2024-03-01T12:00:00Z,60,2023Q4",
                                    "AAPL,2024-04-15T22:00:00Z,55,2023Q4"]))     # the same quarter, restated after the 04-15 close
    days = sessions("2024-03-01", "2024-04-12", "2024-04-15", "2024-04-16")
    v = visible_at(alt, days)["esg"].xs("AAPL", level="symbol")
    assert v.tolist() == [60.0, 60.0, 60.0, 55.0]
    assert (alt["as_of"] == "2023Q4").all()                                  # kept, never used for visibility


def test_a_date_alone_counts_from_the_end_of_that_utc_day(tmp_path):
    alt = read_alt(write(tmp_path, ["AAPL,2024-03-05,1,q"]))
    assert alt["published_at"].iloc[0] == ts("2024-03-06")
    assert np.isnan(one(alt, "2024-03-05")) and one(alt, "2024-03-06") == 1.0


def test_the_close_follows_daylight_saving_and_early_closes(tmp_path):
    alt = read_alt(write(tmp_path, ["AAPL,2024-01-10T20:30:00Z,1,q",             # winter: 15:30 New York, before the 16:00 close
                                    "AAPL,2024-07-10T20:30:00Z,2,q",             # summer: 16:30 New York, after it
                                    "AAPL,2024-11-29T18:30:00Z,3,q"]))           # day after Thanksgiving: closes 13:00 New York
    assert one(alt, "2024-01-10") == 1.0
    assert one(alt, "2024-07-10") == 1.0 and one(alt, "2024-07-11") == 2.0
    assert one(alt, "2024-11-29") == 2.0 and one(alt, "2024-12-02") == 3.0


def test_max_age_forgets_a_stale_value(tmp_path):
    alt = read_alt(write(tmp_path, ["AAPL,2024-03-01T12:00:00Z,1,q"]))
    assert one(alt, "2024-03-28", max_age="30D") == 1.0
    assert np.isnan(one(alt, "2024-04-02", max_age="30D"))


@pytest.fixture
def quarterly(tmp_path):
    "Quarterly scores for two symbols, each published weeks after the quarter it rates, on the 2024 sessions."
    px = pd.DataFrame({"AAPL": 170.0, "MSFT": 400.0}, index=pd.bdate_range("2024-01-02", "2024-12-31", tz=UTC))
    from traderbot.data.calendar import trading_calendar
    px = px[px.index.tz_localize(None).isin(trading_calendar("XNYS").sessions)]
    rows = [f"{s},{pub},{v},{q}" for s, base in (("AAPL", 60), ("MSFT", 70))
            for pub, v, q in ((f"2024-02-15T21:30:00Z", base, "2023-12-31"), ("2024-05-15T13:00:00Z", base + 1, "2024-03-31"),
                              ("2024-08-15", base + 2, "2024-06-30"), ("2024-08-20T20:30:00Z", base + 3, "2024-06-30"))]
    return px, read_alt(write(tmp_path, rows))


def test_the_leakage_auditor_passes_on_alt_features(quarterly):
    px, alt = quarterly
    fns = alt_feature_fns(alt, lag="1h")
    assert list(fns) == ["alt_esg"]
    tab = assert_no_leakage(px, None, px.index[::5], features=fns)
    assert tab.loc["alt_esg", "passed"] and tab.loc["alt_esg", "max_abs_diff"] == 0.0
    panel = feature_panel(px, features={**fns, "ret_1": lambda d: d.closes.pct_change()})   # wired beside a price feature
    assert list(panel.columns) == ["alt_esg", "ret_1"] and panel.index.names == ["timestamp", "symbol"]


def test_the_auditor_catches_a_rule_that_uses_as_of(quarterly):
    px, alt = quarterly
    honest = alt_feature_fns(alt)["alt_esg"]
    peeking = alt.assign(published_at=pd.to_datetime(alt["as_of"]).dt.tz_localize(UTC))   # visible from the period it rates
    def leaky(d):
        cut = session_close(d.closes.index[-1])
        stood = peeking[alt["published_at"] <= cut].drop_duplicates(["symbol", "published_at"], keep="last")   # as it stood; visible by as_of
        return visible_at(stood, d.closes.index)["esg"].unstack("symbol") if len(stood) else honest(d) * np.nan
    tab = audit_leakage(px, None, px.index[::5], features={"honest": honest, "leaky": leaky})
    assert tab.loc["honest", "passed"] and not tab.loc["leaky", "passed"]
    with pytest.raises(DataError, match="feature 'leaky' leaks"):
        assert_no_leakage(px, None, px.index[::5], features={"leaky": leaky})


@pytest.mark.parametrize("row, message", [
    ("AAPL,2024-03-01 20:30,1,q", "esg.csv: line 3: field published_at: '2024-03-01 20:30' has no time zone"),
    ("AAPL,03/01/2024,1,q", "line 3: field published_at: '03/01/2024' is not an ISO time"),
    ("AAPL,2024-03-01T20:30:00Z,nan,q", "line 3: field value is 'nan': expected a finite number"),
    ("AAPL,2024-03-01T20:30:00Z,abc,q", "line 3: field value is 'abc'"),
    ("AAPL,2024-03-01T20:30:00Z,,q", "line 3: field value is empty"),
    ("aa pl,2024-03-01T20:30:00Z,1,q", "line 3: field symbol: invalid symbol 'aa pl'"),
    ("TSLA,2024-03-01T20:30:00Z,1,q", "line 3: field symbol: unknown symbol 'TSLA'"),
    ("AAPL,2024-03-01T15:30:00-05:00,2,q", "line 3: duplicate value: series 'esg', symbol AAPL, published_at 2024-03-01T20:30:00+00:00"),
])
def test_read_alt_names_file_line_and_field(tmp_path, row, message):
    f = write(tmp_path, ["AAPL,2024-03-01T20:30:00Z,1,q", row])
    with pytest.raises(DataError) as e: read_alt(f, symbols=["AAPL", "MSFT"])
    assert message in str(e.value) and str(tmp_path) in str(e.value)


def test_a_folder_and_a_series_column_and_parquet(tmp_path):
    write(tmp_path, ["AAPL,2024-03-01T20:30:00Z,1,q"])
    write(tmp_path, ["AAPL,traffic,2024-03-01T20:30:00Z,5", "MSFT,sentiment,2024-03-04,0.2"], name="mixed.csv",
          header="symbol,series,published_at,value")
    pd.DataFrame({"symbol": ["MSFT"], "published_at": [ts("2024-03-04 14:00")], "value": [9.0]}).to_parquet(tmp_path / "web.parquet")
    alt = read_alt(tmp_path)
    assert sorted(alt["series"].unique()) == ["esg", "sentiment", "traffic", "web"]
    v = visible_at(alt, sessions("2024-03-04", "2024-03-05"))
    assert list(v.columns) == ["esg", "sentiment", "traffic", "web"]
    assert v.loc[(ts("2024-03-04"), "MSFT"), "web"] == 9.0 and np.isnan(v.loc[(ts("2024-03-04"), "MSFT"), "sentiment"])
    pd.DataFrame({"symbol": ["MSFT"], "published_at": [pd.Timestamp("2024-03-04 14:00")], "value": [1.0]}).to_parquet(tmp_path / "naive.parquet")
    with pytest.raises(DataError, match=r"naive.parquet: row 1: field published_at: .* has no time zone"): read_alt(tmp_path / "naive.parquet")
    write(tmp_path, ["AAPL,2024-03-01T20:30:00Z,1,q"], name="Bad Name.csv")
    with pytest.raises(DataError, match="is not a series name"): read_alt(tmp_path / "Bad Name.csv")
    with pytest.raises(DataError, match="unknown column 'source'"):
        read_alt(write(tmp_path, ["AAPL,2024-03-01T20:30:00Z,1,x"], name="x.csv", header="symbol,published_at,value,source"))


def test_sessions_must_be_exchange_sessions(tmp_path):
    alt = read_alt(write(tmp_path, ["AAPL,2024-03-01T20:30:00Z,1,q"]))
    with pytest.raises(DataError, match="2024-03-02 is not a XNYS session"): visible_at(alt, sessions("2024-03-02"))
    with pytest.raises(DataError, match="aware UTC"): visible_at(alt, pd.DatetimeIndex(["2024-03-01"]))

"""The bar lake (traderbot.data.lake) and the files provider (traderbot.data.providers.files), end to end on disk.

- re-ingesting the same data changes nothing but the manifest; a changed value is a revision readable as of any time;
- splits (2:1, 1:10 reverse) and dividends adjust the history before the ex-date, never the latest bar;
- a bad file is refused naming file, line and field, and nothing of it reaches the lake;
- files -> lake -> bars gives back the input; last_sessions says how fresh each symbol is;
- a crash half-way through an ingest leaves nothing readable; two ingests at once both land.
"""
from __future__ import annotations
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from traderbot.config import Settings
from traderbot.core import DataError
from traderbot.data.bars import INDEX_NAMES
from traderbot.data.lake import BarLake, adjust_bars, benchmark_for, sectors_for, source_for
from traderbot.data.providers.base import BAR_COLUMNS, actions_frame, profiles_frame
from traderbot.data.providers.files import FilesProvider

T = [pd.Timestamp(f"2024-07-0{d} 22:00", tz="UTC") for d in range(1, 9)]
DAYS = ["2024-06-03", "2024-06-04", "2024-06-05", "2024-06-06", "2024-06-07", "2024-06-10"]


def day(d: str) -> pd.Timestamp:
    return pd.Timestamp(d, tz="UTC")


def raw_bars(symbol: str, closes: list[float], volumes: list[float] | None = None, days=DAYS) -> pd.DataFrame:
    "Raw bars of one symbol on `days`: open/high/low around the close."
    n = len(closes)
    idx = pd.MultiIndex.from_arrays([pd.DatetimeIndex(days[:n], tz="UTC").as_unit("ns"), [symbol] * n], names=INDEX_NAMES)
    c = np.asarray(closes, dtype=float)
    return pd.DataFrame({"open": c, "high": c * 1.01, "low": c * 0.99, "close": c,
                         "volume": np.asarray(volumes or [1000.0] * n, dtype=float)}, index=idx)


def split(symbol, ex, ratio):
    return actions_frame([{"symbol": symbol, "ex_date": ex, "kind": "split", "ratio": ratio}], "test")


def dividend(symbol, ex, cash):
    return actions_frame([{"symbol": symbol, "ex_date": ex, "kind": "dividend", "cash": cash}], "test")


def lake_files(lake: BarLake) -> list[str]:
    return sorted(str(p.relative_to(lake.root)) for p in lake.root.rglob("*.parquet"))


# --- ingest and revisions ---------------------------------------------------------------------------------

def test_ingesting_the_same_data_twice_changes_nothing_but_is_recorded(tmp_path):
    lake, bars = BarLake(tmp_path / "lake"), raw_bars("AAPL", [190, 191, 192, 193, 194, 195])
    first = lake.ingest("files", bars, split("AAPL", "2024-06-05", 2), profiles_frame([{"symbol": "AAPL", "sector": "IT"}], "t"),
                        run_id="r1", at=T[0])
    assert (first.rows_new, first.rows_changed, first.actions_new, first.profiles_new, first.unchanged) == (6, 0, 1, 1, False)
    files = lake_files(lake)
    again = lake.ingest("files", bars, split("AAPL", "2024-06-05", 2), profiles_frame([{"symbol": "AAPL", "sector": "IT"}], "t"),
                        run_id="r2", at=T[1])
    assert (again.rows_new, again.rows_changed, again.actions_new, again.profiles_new, again.unchanged) == (0, 0, 0, 0, True)
    assert lake_files(lake) == files
    log = lake.ingests()
    assert log["run_id"].tolist() == ["r1", "r2"]
    assert log[["rows_new", "rows_changed", "actions_new"]].values.tolist() == [[6, 0, 1], [0, 0, 0]]
    assert log["symbols"].tolist() == ["AAPL", "AAPL"] and log["first_session"].iloc[0] == day("2024-06-03")
    assert log["ingest_id"].is_unique and log["at"].tolist() == T[:2]


def test_a_revised_close_is_a_new_revision_and_the_old_one_stays_readable(tmp_path):
    lake, bars = BarLake(tmp_path / "lake"), raw_bars("AAPL", [190, 191, 192])
    lake.ingest("files", bars, at=T[0])
    fixed = bars.copy()
    fixed.loc[(day("2024-06-04"), "AAPL"), "close"] = 191.5
    more = pd.concat([fixed, raw_bars("AAPL", [190, 191, 191.5, 193])[3:]])
    r = lake.ingest("polygon", more, at=T[2])
    assert (r.rows_new, r.rows_changed, r.unchanged) == (1, 1, False)
    key = (day("2024-06-04"), "AAPL")
    assert lake.raw(known_at=T[1]).loc[key, "close"] == 191.0
    assert len(lake.raw(known_at=T[1])) == 3
    assert lake.raw().loc[key, "close"] == 191.5 and len(lake.raw()) == 4
    assert lake.raw(known_at=T[2]).loc[key, "close"] == 191.5          # known_at is inclusive
    assert lake.bars(["AAPL"]).loc[key, "close"] == 191.5
    assert lake.last_sessions()["provider"].tolist() == ["polygon"]


def test_a_change_in_the_providers_adj_close_alone_is_not_a_revision(tmp_path):
    lake, bars = BarLake(tmp_path / "lake"), raw_bars("AAPL", [190, 191, 192])
    lake.ingest("alpaca", bars.assign(adj_close=[189.0, 190.0, 192.0]), at=T[0])
    r = lake.ingest("alpaca", bars.assign(adj_close=[188.5, 189.5, 192.0]), at=T[1])   # a new dividend moved the whole adj_close
    assert r.unchanged
    assert lake.raw()["adj_close"].tolist() == [189.0, 190.0, 192.0]                   # kept as first delivered
    assert "adj_close" not in lake.bars(["AAPL"]).columns                              # the system uses its own adjustment


def test_ingest_refuses_time_going_backwards_and_bad_bars(tmp_path):
    lake = BarLake(tmp_path / "lake")
    lake.ingest("files", raw_bars("AAPL", [1, 2]), at=T[3])
    with pytest.raises(DataError, match="before the last ingest"): lake.ingest("files", raw_bars("AAPL", [1, 3]), at=T[2])
    with pytest.raises(DataError, match="files: bars lack volume"): lake.ingest("files", raw_bars("AAPL", [1, 2]).drop(columns="volume"))
    bad = raw_bars("AAPL", [1, 2])
    bad.iloc[1, bad.columns.get_loc("close")] = -1.0
    with pytest.raises(DataError, match="close must be positive.*AAPL on 2024-06-04"): lake.ingest("files", bad)
    assert len(lake.ingests()) == 1


# --- corporate actions ------------------------------------------------------------------------------------

def test_a_two_for_one_split_halves_the_history_before_the_ex_date(tmp_path):
    lake = BarLake(tmp_path / "lake")
    closes, volumes = [200, 202, 204, 102, 103, 104], [10, 10, 10, 20, 20, 20]
    lake.ingest("files", raw_bars("MSFT", closes, volumes), split("MSFT", "2024-06-06", 2), at=T[0])
    adj, raw = lake.adjusted(["MSFT"]), lake.raw(["MSFT"])
    np.testing.assert_allclose(adj["close"], [100, 101, 102, 102, 103, 104])
    np.testing.assert_allclose(adj["high"], np.array([100, 101, 102, 102, 103, 104]) * 1.01)
    assert adj["volume"].tolist() == [20.0] * 6
    assert adj["close"].iloc[-1] == raw["close"].iloc[-1]
    assert raw["close"].tolist() == closes                                              # raw stays raw
    assert lake.bars("MSFT")["close"].iloc[0] == pytest.approx(100)


def test_a_reverse_split_one_for_ten_multiplies_the_history(tmp_path):
    lake = BarLake(tmp_path / "lake")
    lake.ingest("files", raw_bars("GE", [10, 11, 110, 112], [1000, 1000, 100, 100]), split("GE", "2024-06-05", 0.1), at=T[0])
    adj = lake.adjusted("GE")
    np.testing.assert_allclose(adj["close"], [100, 110, 110, 112])
    np.testing.assert_allclose(adj["volume"], [100, 100, 100, 100])
    assert adj["close"].iloc[-1] == 112.0


def test_dividends_adjust_prices_before_the_ex_date_so_the_ex_date_drop_is_no_loss(tmp_path):
    lake = BarLake(tmp_path / "lake")
    lake.ingest("files", raw_bars("XOM", [100, 102, 99, 100]), dividend("XOM", "2024-06-05", 2.0), at=T[0])
    adj = lake.adjusted("XOM")["close"].to_numpy()
    f = 1 - 2.0 / 102
    np.testing.assert_allclose(adj, [100 * f, 102 * f, 99, 100])
    assert adj[2] / adj[1] - 1 == pytest.approx(99 / (102 - 2.0) - 1)                  # the ex-date return: close over the cum-dividend close less the cash
    np.testing.assert_allclose(lake.adjusted("XOM", dividends=False)["close"], [100, 102, 99, 100])
    assert lake.adjusted("XOM", start="2024-06-04", end="2024-06-04")["close"].tolist() == [pytest.approx(102 * f)]


def test_a_split_and_a_dividend_on_one_ex_date_use_the_post_split_close(tmp_path):
    acts = pd.concat([split("KO", "2024-06-05", 2), dividend("KO", "2024-06-05", 1.0)])
    adj = adjust_bars(raw_bars("KO", [100, 100, 50]), acts)["close"].to_numpy()
    np.testing.assert_allclose(adj, [50 * (1 - 1 / 50), 50 * (1 - 1 / 50), 50])


def test_an_action_learned_late_is_read_as_it_was_known(tmp_path):
    lake = BarLake(tmp_path / "lake")
    lake.ingest("files", raw_bars("NVDA", [1200, 1210, 121, 122]), at=T[0])                 # the split is not known yet
    lake.ingest("files", raw_bars("NVDA", [1200, 1210, 121, 122]), split("NVDA", "2024-06-05", 10), at=T[1])
    assert lake.adjusted("NVDA", known_at=T[0])["close"].tolist() == [1200, 1210, 121, 122]
    np.testing.assert_allclose(lake.adjusted("NVDA")["close"], [120, 121, 121, 122])
    assert len(lake.actions(known_at=T[0])) == 0 and lake.actions("NVDA")["ratio"].tolist() == [10.0]
    revised = lake.ingest("files", raw_bars("NVDA", [1200, 1210, 121, 122]), split("NVDA", "2024-06-05", 9.9), at=T[2])
    assert revised.actions_new == 1 and lake.actions()["ratio"].tolist() == [9.9]


def test_an_action_after_the_last_bar_is_not_applied_yet(tmp_path):
    lake = BarLake(tmp_path / "lake")
    lake.ingest("files", raw_bars("AAPL", [100, 101]), split("AAPL", "2024-06-10", 4), at=T[0])
    assert lake.adjusted("AAPL")["close"].tolist() == [100, 101]


# --- the files provider ------------------------------------------------------------------------------------

HEAD = "date,open,high,low,close,volume\n"
GOOD = "2024-06-06,1,2,1,2,100\n2024-06-07,1,2,1,2,100\n"


@pytest.mark.parametrize("text, message", [
    (HEAD + GOOD + "2024-06-10,1,2,1,abc,100\n", "line 4: close 'abc' is not a number"),
    (HEAD + GOOD + "2024-13-01,1,2,1,2,100\n", "line 4: date '2024-13-01' is not a date"),
    (HEAD + GOOD + "06/10/2024,1,2,1,2,100\n", "line 4: date '06/10/2024' is not a date"),
    (HEAD + GOOD + "2024-06-07,1,2,1,2,100\n", "line 4: duplicate date 2024-06-07 (also on line 3)"),
    (HEAD + GOOD + "2024-06-10,1,2,1,-3,100\n", "line 4: close -3.0 must be positive"),
    (HEAD + GOOD + "2024-06-10,0,2,1,2,100\n", "line 4: open 0.0 must be positive"),
    (HEAD + GOOD + "2024-06-10,1,2,1,2,-1\n", "line 4: volume -1.0 must not be negative"),
    (HEAD + GOOD + "2024-06-10,1,1,2,2,100\n", "line 4: high 1.0 is below low 2.0"),
    (HEAD + GOOD + "2024-06-08,1,2,1,2,100\n", "line 4: 2024-06-08 is not a XNYS session"),
    (HEAD + GOOD + "\n\n2024-06-10,1,2,1,,100\n", "line 6: close is missing"),
    ("date,open,high,low,close\n2024-06-06,1,2,1,2\n", "missing column volume"),
    ("Date,Open,High,Low,Close,Volume,Adj Close\n2024-06-06,1,2,1,2,100,x\n", "line 2: adj_close 'x' is not a number"),
])
def test_a_bad_file_is_refused_naming_file_line_and_field_and_nothing_reaches_the_lake(tmp_path, text, message):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "AAPL.csv").write_text(HEAD + GOOD)
    (folder / "XOM.csv").write_text(text)
    provider, lake = FilesProvider(folder), BarLake(tmp_path / "lake")
    with pytest.raises(DataError) as e:
        lake.ingest(provider.name, provider.daily_bars(provider.symbols()))
    assert str(e.value).startswith(f"{folder / 'XOM.csv'}: {message}"), str(e.value)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "lake").exists()
    assert provider.daily_bars(["AAPL"])["close"].tolist() == [2.0, 2.0]               # the good file still reads


def test_bad_side_files_and_names_are_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "AAPL.csv").write_text(HEAD + GOOD)
    provider = FilesProvider(folder)
    (folder / "splits.csv").write_text("symbol,ex_date,ratio\nAAPL,2024-06-07,2\nAAPL,2024-06-07,2\n")
    with pytest.raises(DataError, match=r"splits.csv: line 3: AAPL has two splits on 2024-06-07"): provider.corporate_actions()
    (folder / "splits.csv").write_text("symbol,ex_date,ratio\nAAPL,2024-06-07,0\n")
    with pytest.raises(DataError, match=r"splits.csv: line 2: ratio 0.0 must be a positive number other than 1"): provider.corporate_actions()
    (folder / "splits.csv").unlink()
    (folder / "dividends.csv").write_text("symbol,ex_date,cash\naapl,2024-06-07,0.25\n")
    with pytest.raises(DataError, match=r"dividends.csv: line 2: symbol: invalid symbol 'aapl'"): provider.corporate_actions()
    (folder / "dividends.csv").unlink()
    (folder / "AAPL.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="two files for AAPL"): provider.symbols()
    (folder / "AAPL.parquet").unlink()
    (folder / "my data.csv").write_text(HEAD)
    with pytest.raises(DataError, match="file name must be a ticker"): provider.symbols()


def test_files_to_lake_to_bars_round_trip_equals_the_input(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    aapl = raw_bars("AAPL", [194.48, 196.89, 193.12, 193.12, 197.3, 191.29], [41e6, 53e6, 97e6, 1, 2, 3])
    spy = raw_bars("SPY", [534.01, 535.66, 533.1, 536.2, 537.9, 539.0])
    # AAPL as CSV (newest first, as many exports are), SPY as Parquet
    a = aapl.reset_index("symbol", drop=True).rename_axis("Date").iloc[::-1]
    a.index = a.index.strftime("%Y-%m-%d")
    a.assign(**{"Adj Close": a["close"]}).to_csv(folder / "AAPL.csv")
    spy.reset_index("symbol", drop=True).rename_axis("date").reset_index().to_parquet(folder / "SPY.parquet")
    (folder / "sectors.csv").write_text("symbol,sector,industry\nAAPL,Information Technology,Hardware\n")
    provider = FilesProvider(folder)
    fetched = provider.daily_bars(provider.symbols())
    lake = BarLake(tmp_path / "lake")
    r = lake.ingest(provider.name, fetched, provider.corporate_actions(), provider.profiles(provider.symbols()), run_id="ingest-1")
    assert (r.rows_new, r.symbols, r.sessions) == (12, ("AAPL", "SPY"), 6)
    expected = pd.concat([aapl, spy]).sort_index()
    pd.testing.assert_frame_equal(lake.bars(["AAPL", "SPY"]), expected, check_exact=True)
    pd.testing.assert_frame_equal(lake.raw(), fetched[BAR_COLUMNS], check_exact=True)   # SPY has no adj_close: dropped for all
    assert lake.profiles().loc["AAPL", "industry"] == "Hardware"
    assert lake.symbols() == ["AAPL", "SPY"] and lake.latest_session() == day("2024-06-10")
    assert lake.ingest(provider.name, provider.daily_bars(provider.symbols())).unchanged


def test_last_sessions_say_how_fresh_each_symbol_is(tmp_path):
    lake = BarLake(tmp_path / "lake")
    assert lake.last_sessions().empty
    lake.ingest("files", pd.concat([raw_bars("AAPL", [1, 2, 3]), raw_bars("SPY", [1, 2])]).sort_index(), at=T[0])
    lake.ingest("alpaca", raw_bars("AAPL", [1, 2, 3, 4]), at=T[1])
    lake.ingest("alpaca", raw_bars("AAPL", [1, 2, 3, 4]), at=T[2])                           # nothing new, but asked
    fresh = lake.last_sessions()
    assert list(fresh.columns) == ["symbol", "provider", "last_session", "last_ingest_at"]
    assert fresh.values.tolist() == [["AAPL", "alpaca", day("2024-06-06"), T[2]], ["SPY", "files", day("2024-06-04"), T[0]]]


# --- reading -----------------------------------------------------------------------------------------------

def test_an_empty_lake_and_unknown_symbols_are_clear_errors(tmp_path):
    lake = BarLake(tmp_path / "nowhere")
    assert lake.symbols() == [] and lake.last_sessions().empty and lake.ingests().empty   # listings: empty
    for read in (lake.raw, lake.adjusted, lake.actions, lake.profiles, lake.latest_session, lambda: lake.bars(["AAPL"])):
        with pytest.raises(DataError, match=r"the bar lake at .*nowhere is empty: run `traderbot ingest` first"): read()
    lake.ingest("files", raw_bars("AAPL", [1, 2]), at=T[0])
    with pytest.raises(DataError, match="unknown symbol MSFT, IBM: the bar lake at .* has AAPL"): lake.bars(["AAPL", "MSFT", "IBM"])
    with pytest.raises(DataError, match="no bars in the bar lake"): lake.bars(["AAPL"], start="2024-07-01")
    assert lake.actions(["MSFT"]).empty                                                   # actions need no bars


def test_a_crash_before_the_manifest_leaves_nothing_readable(tmp_path, monkeypatch):
    lake = BarLake(tmp_path / "lake")
    lake.ingest("files", raw_bars("AAPL", [1, 2]), at=T[0])
    import traderbot.data.lake as mod
    real = mod._write
    def crash(df, path, kind):
        if kind == "ingests": raise OSError("power cut")
        return real(df, path, kind)
    monkeypatch.setattr(mod, "_write", crash)
    with pytest.raises(OSError): lake.ingest("files", raw_bars("AAPL", [1, 5, 6]), split("AAPL", "2024-06-04", 2), at=T[1])
    monkeypatch.setattr(mod, "_write", real)
    fresh = BarLake(lake.root)
    assert len(fresh.ingests()) == 1 and fresh.raw()["close"].tolist() == [1, 2] and fresh.actions().empty
    assert len(list((lake.root / "bars" / "AAPL").glob("*.parquet"))) == 2                  # the leftover is there, unread
    r = fresh.ingest("files", raw_bars("AAPL", [1, 2]), at=T[2])
    assert r.unchanged and fresh.raw()["close"].tolist() == [1, 2]
    assert not list(lake.root.rglob("*.tmp"))


def test_two_ingests_at_once_both_land(tmp_path):
    root, errors = tmp_path / "lake", []
    def run(sym):
        try: BarLake(root).ingest("files", raw_bars(sym, [1, 2, 3]))
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=run, args=(s,)) for s in ("AAPL", "MSFT", "XOM", "IBM")]
    for t in threads: t.start()
    for t in threads: t.join()
    assert errors == []
    lake = BarLake(root)
    assert len(lake.ingests()) == 4 and lake.ingests()["ingest_id"].is_unique
    assert lake.symbols() == ["AAPL", "IBM", "MSFT", "XOM"] and len(lake.raw()) == 12


def test_settings_choose_the_source_benchmark_and_sectors(tmp_path):
    from traderbot.data.sample import default_data_dir
    sample = Settings(root=tmp_path, data={"path": default_data_dir()})
    assert source_for(sample).bars(["XOM"], "2022-12-28", "2022-12-28")["close"].iloc[0] > 0
    assert benchmark_for(sample).name == "SP500"
    assert sectors_for(sample)["XOM"] == "Energy"
    lake = BarLake(tmp_path / "lake")
    lake.ingest("files", pd.concat([raw_bars("AAPL", [1, 2]), raw_bars("SPY", [500, 510])]).sort_index(),
                profiles=profiles_frame([{"symbol": "AAPL", "sector": "Tech"}, {"symbol": "SPY", "sector": None}], "t"), at=T[0])
    (tmp_path / "sectors.csv").write_text("symbol,sector\nAAPL,Information Technology\nSPY,Index\n")
    cfg = Settings(root=tmp_path, data={"source": "lake", "lake": "lake", "benchmark": "SPY", "sectors": "sectors.csv"})
    assert isinstance(source_for(cfg), BarLake) and source_for(cfg).root == tmp_path / "lake"
    assert benchmark_for(cfg).tolist() == [500.0, 510.0] and benchmark_for(cfg, "2024-06-03").tolist() == [500.0]
    assert sectors_for(cfg) == {"AAPL": "Information Technology", "SPY": "Index"}
    assert sectors_for(cfg.model_copy(update={"data": cfg.data.model_copy(update={"sectors": None})})) == {"AAPL": "Tech"}

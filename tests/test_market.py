"""Today's market in production, through the real `traderbot` command: the quality gates on altered copies of the
embedded sample (the probes of issue 12: a frozen price, an unadjusted split), a split recorded in the bar lake and
applied to the ledger as a corporate action, and `traderbot ingest` from your own files.

Each test runs the real command in a subprocess with its own store, reports folder and data copy.
"""
from __future__ import annotations
import os, shutil, subprocess, sys
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from traderbot.brokers.paper import PaperBroker, market_at
from traderbot.execution.manager import ledger_problems
from traderbot.store import database, ledger

ROOT = Path(__file__).resolve().parents[1]
TRADERBOT = [str(Path(sys.executable).parent / "traderbot")]
FIRST, DAY = "2022-11-28", "2022-12-28"          # two sessions, each a rebalance ([strategy] rebalance = every 1)
pytestmark = pytest.mark.timeout(600)


def run(env, *args, timeout=300):
    return subprocess.run([*TRADERBOT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def environment(tmp: Path, **settings) -> tuple[dict, str]:
    "An environment with its own store and reports, plus `TRADERBOT__SECTION__KEY` overrides given as section__key=value."
    url = f"sqlite:///{tmp / 'traderbot.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADERBOT")}
    env.update(TRADERBOT_SETTINGS=str(ROOT / "settings.ini"), TRADERBOT__STORE__URL=url,
               TRADERBOT__PIPELINE__REPORTS_DIR=str(tmp / "reports"), TRADERBOT__MODELS__USE="false",
               TRADERBOT__STRATEGY__REBALANCE="every 1")
    env.update({f"TRADERBOT__{k.upper()}": str(v) for k, v in settings.items()})
    return env, url


def altered_sample(tmp: Path, change) -> Path:
    "A copy of data/sample whose wide closes file went through `change(frame)`."
    dst = tmp / "sample"
    shutil.copytree(ROOT / "data" / "sample", dst)
    f = dst / "sp500_closes.csv.gz"
    df = pd.read_csv(f, index_col="Date")
    change(df)
    df.to_csv(f)
    return dst


def orders_of(url: str, symbol: str, day: str) -> list:
    eng = database.connect(url)
    return [o for o in ledger.orders_for(eng, ledger.account_id(eng, "default"), day) if o.symbol == symbol]


def held(url: str) -> dict:
    eng = database.connect(url)
    return {s: p.quantity for s, p in ledger.get_positions(eng, ledger.account_id(eng, "default")).items()}


def alerts(url: str, source: str) -> list[str]:
    al = ledger.alerts_frame(database.connect(url), "default", limit=200)
    return al[al.source == source].message.tolist()


def test_b6_b10_a_frozen_price_and_an_unadjusted_split_sit_out_the_session(tmp_path):
    """The issue's probes on the embedded sample: XOM's close frozen for the ten sessions to 2022-12-28, and CVX's
    closes halved from 2022-12-15 as an unadjusted 2-for-1 split would show them (the sample has no corporate actions).
    The rebalance of 2022-12-28 leaves both out: their orders are denied STALE_DATA and DATA_QUALITY, their positions
    are untouched (CVX is not sold at half price), one alert names both; the other symbols trade; the ledger audit is clean."""
    def change(df):
        days = df.index >= "2022-12-14"
        df.loc[days, "XOM"] = df.loc[df.index < "2022-12-14", "XOM"].iloc[-1]
        df.loc[df.index >= "2022-12-15", "CVX"] /= 2
    sample = altered_sample(tmp_path, change)
    env, url = environment(tmp_path, data__path=sample)
    first = run(env, "run", "daily", "-p", f"as_of={FIRST}")
    assert first.returncode == 0, first.stderr
    before = held(url)
    assert {"XOM", "CVX"} <= set(before), before                      # both were bought on the first session
    r = run(env, "run", "daily", "-p", f"as_of={DAY}")
    assert r.returncode == 0, r.stderr
    xom, cvx = orders_of(url, "XOM", DAY), orders_of(url, "CVX", DAY)
    assert xom and all(o.status.value == "denied" and o.reason.startswith("STALE_DATA") for o in xom), xom
    assert cvx and all(o.status.value == "denied" and o.reason.startswith("DATA_QUALITY") for o in cvx), cvx
    after = held(url)
    assert (after["XOM"], after["CVX"]) == (before["XOM"], before["CVX"])
    traded = [o for o in ledger.orders_for(database.connect(url), 1, DAY) if o.status.value == "filled"]
    assert traded and {o.symbol for o in traded}.isdisjoint({"XOM", "CVX"})
    msg = alerts(url, "data:quality")
    assert len(msg) == 1 and "XOM (STALE_DATA: XOM: close" in msg[0] and "CVX (DATA_QUALITY: CVX:" in msg[0], msg
    eng = database.connect(url)
    venue = PaperBroker(eng, "default", market_at({}, pd.Timestamp(f"{DAY} 21:00", tz="UTC")))
    assert ledger_problems(eng, ledger.account_id(eng, "default"), venue) == []


def test_a_failing_benchmark_stops_the_run_before_any_order(tmp_path):
    "The benchmark frozen for ten sessions: the run stops naming it, with a critical alert, and nothing is sent."
    sample = tmp_path / "sample"
    shutil.copytree(ROOT / "data" / "sample", sample)
    f = sample / "sp500_index.csv.gz"
    df = pd.read_csv(f, index_col=0)
    df.iloc[-10:, 0] = df.iloc[-11, 0]
    df.to_csv(f)
    env, url = environment(tmp_path, data__path=sample)
    r = run(env, "run", "daily", "-p", f"as_of={DAY}")
    assert r.returncode == 1 and "quality gates" in r.stderr and "benchmark" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr                                  # the failure's line, and where its report is
    eng = database.connect(url)
    assert ledger.find_account(eng, "default") is None or ledger.orders_for(eng, ledger.account_id(eng, "default")) == []
    assert any("nothing was traded" in m for m in ledger.alerts_frame(eng, None, limit=20).message)


def files_from_sample(folder: Path, symbols: list[str], split: tuple[str, str, int] | None = None) -> Path:
    "One CSV per symbol (and SPY from the index) written from the embedded sample since 2021, optionally with a split's raw prices and splits.csv."
    from traderbot.data.sample import load_benchmark, load_closes
    folder.mkdir(parents=True, exist_ok=True)
    px = load_closes().loc["2021-01-01":, symbols].assign(SPY=load_benchmark().loc["2021-01-01":])
    if split:
        sym, ex, ratio = split
        px.loc[px.index >= pd.Timestamp(ex, tz="UTC"), sym] /= ratio          # raw prices: the split shows as a drop
        (folder / "splits.csv").write_text(f"symbol,ex_date,ratio\n{sym},{ex},{ratio}\n")
    for s in px.columns:
        pd.DataFrame({"date": px.index.strftime("%Y-%m-%d"), "open": px[s], "high": px[s], "low": px[s], "close": px[s],
                      "volume": 5e7}).to_csv(folder / f"{s}.csv", index=False)
    shutil.copy(ROOT / "data" / "sample" / "sectors.csv", folder / "sectors.csv")
    return folder


UNIVERSE = ["AAPL", "CVX", "JNJ", "JPM", "KO", "LLY", "MRK", "PG", "WMT", "XOM"]


def test_b10_a_split_in_the_lake_is_a_corporate_action_not_a_trade(tmp_path):
    """Own files with raw prices and a 2-for-1 CVX split on 2022-12-15 (`splits.csv`) go through `traderbot ingest`
    into the lake; the daily runs read the lake (`[data] source = lake`). The split is applied to the ledger's CVX
    position (an audit row: twice the shares at half the cost) and to the paper venue's book, not traded; the quality
    gates see the drop explained by the split; reconciliation and the ledger audit are clean."""
    files = files_from_sample(tmp_path / "files", UNIVERSE, split=("CVX", "2022-12-15", 2))
    env, url = environment(tmp_path, data__source="lake", data__lake=tmp_path / "lake", data__benchmark="SPY",
                           data__universe=" ".join(UNIVERSE), data__sectors=files / "sectors.csv")
    ing = run(env, "ingest", "--provider", "files", "--path", str(files), "--as-of", DAY)
    assert ing.returncode == 0, ing.stderr
    assert "1 corporate actions" in ing.stdout, ing.stdout
    first = run(env, "run", "daily", "-p", f"as_of={FIRST}")
    assert first.returncode == 0, first.stderr
    cvx_before = held(url).get("CVX")
    assert cvx_before, held(url)
    r = run(env, "run", "daily", "-p", f"as_of={DAY}")
    assert r.returncode == 0, r.stderr
    eng = database.connect(url)
    aid = ledger.account_id(eng, "default")
    ca = ledger.corporate_actions_frame(eng, aid)
    assert ca[["symbol", "ratio", "quantity_before", "quantity_after"]].values.tolist() == [["CVX", Decimal(2), cvx_before, 2 * cvx_before]]
    assert alerts(url, "data:quality") == []                            # the drop is explained by the recorded split
    assert [m for m in alerts(url, "corporate_action") if "CVX split 2-for-1 on 2022-12-15" in m]
    cvx_orders = orders_of(url, "CVX", DAY)
    assert all(o.quantity < cvx_before for o in cvx_orders), cvx_orders  # never a sale of the "missing" half
    venue = PaperBroker(eng, "default", market_at({}, pd.Timestamp(f"{DAY} 21:00", tz="UTC")))
    assert ledger_problems(eng, aid, venue) == []


def test_ingest_from_files_is_recorded_idempotent_and_refuses_a_bad_file_naming_it(tmp_path):
    "`traderbot ingest` twice changes nothing the second time; a bad file fails in one line naming file, line and field, and keeps nothing."
    files = files_from_sample(tmp_path / "files", ["AAPL", "MSFT"])
    env, url = environment(tmp_path, data__source="lake", data__lake=tmp_path / "lake", data__benchmark="SPY")
    one = run(env, "ingest", "--provider", "files", "--path", str(files), "--as-of", DAY)
    two = run(env, "ingest", "--provider", "files", "--path", str(files), "--as-of", DAY)
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr
    assert "0 new bars, 0 revised" in two.stdout and "0 new bars" not in one.stdout, (one.stdout, two.stdout)
    lines = (files / "MSFT.csv").read_text().splitlines()
    cells = lines[9].split(","); cells[4] = "n/a"; lines[9] = ",".join(cells)
    (files / "MSFT.csv").write_text("\n".join(lines) + "\n")
    bad = run(env, "ingest", "--provider", "files", "--path", str(files), "--as-of", DAY)
    assert bad.returncode == 1 and "MSFT.csv: line 10: close 'n/a' is not a number" in bad.stderr, bad.stderr
    from traderbot.data.lake import BarLake
    lake = BarLake(tmp_path / "lake")
    assert lake.ingests().rows_new.tolist()[:2][1] == 0 and lake.ingests().rows_new.sum() == lake.ingests().rows_new.iloc[0]

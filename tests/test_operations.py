"""Operations that survive the operator (issue 11), through the real `traderbot` command: one trading run per account
at a time (and catalogue L2: a pipeline, a reader and a reconciler on one SQLite file), runs that always end settled
(SIGTERM, Ctrl-C, a killed process) with no kernel left behind, a kill switch that can be lifted, and every failure
in one line."""
import os, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from traderbot.store import database, ledger
from traderbot.store.runs import get_run, runs_frame
from test_pipeline import ROOT, TRADERBOT, environment, table_rows, traderbot


def start(env, *args):
    "The command started in its own session (as a terminal would run it), not waited for."
    return subprocess.Popen([*TRADERBOT, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(check, timeout=120, what="condition"):
    "Poll `check()` until it returns something true."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got = check()
            if got: return got
        except Exception: pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def kernel_of(proc):
    "The pipeline's kernel: the Python child of the CLI that runs ipykernel."
    kids = psutil.Process(proc.pid).children(recursive=True)
    return next((k for k in kids if "ipykernel" in " ".join(k.cmdline())), None)


def test_one_trading_run_per_account(tmp_path):
    env, url, _ = environment(tmp_path)
    first = start(env, "run", "daily", "-p", "as_of=2022-12-27")
    holder = wait_for(lambda: table_rows(url, "run_locks"), what="the first run's lock")[0]
    refused = traderbot({**env, "TRADERBOT__PIPELINE__LOCK_WAIT_S": "0"}, "run", "daily", "-p", "as_of=2022-12-28")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()] and "Traceback" not in refused.stderr
    assert f"account 'default' is being traded by run {holder['run_id']}" in refused.stderr
    waiting = start(env, "run", "daily", "-p", "as_of=2022-12-28")            # waits ([pipeline] lock_wait_s = 60), then runs
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert waiting.wait(timeout=300) == 0, waiting.stderr.read()
    runs = runs_frame(database.connect(url))
    assert sorted(runs.status) == ["succeeded", "succeeded"]                    # the refused run left no run row
    assert table_rows(url, "run_locks") == []


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_stopped_run_is_recorded_interrupted_and_its_kernel_stopped(tmp_path, how):
    env, url, _ = environment(tmp_path)
    p = start(env, "run", "daily", "-p", "as_of=2022-12-27")
    kernel = wait_for(lambda: kernel_of(p), what="the kernel")
    run_id = wait_for(lambda: table_rows(url, "run_locks")[0]["run_id"], what="the run's lock")
    if how == "SIGTERM": p.send_signal(signal.SIGTERM)
    else: os.killpg(p.pid, signal.SIGINT)                                      # Ctrl-C reaches the whole process group
    assert p.wait(timeout=60) == 1
    err = p.stderr.read()
    assert "Traceback" not in err and f"run {run_id} interrupted" in err, err
    assert get_run(database.connect(url), run_id)["status"] == "interrupted"
    assert table_rows(url, "run_locks") == []
    wait_for(lambda: not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE, timeout=15, what="the kernel to stop")
    rerun = traderbot(env, "run", "daily", "-p", "as_of=2022-12-27")         # the session can be run again
    assert rerun.returncode == 0, rerun.stderr


def test_a_killed_run_is_abandoned_and_no_kernel_outlives_it(tmp_path):
    env, url, _ = environment(tmp_path)
    p = start(env, "run", "daily", "-p", "as_of=2022-12-27")
    kernel = wait_for(lambda: kernel_of(p), what="the kernel")
    run_id = wait_for(lambda: table_rows(url, "run_locks")[0]["run_id"], what="the run's lock")
    p.kill(); p.wait(timeout=30)                                               # SIGKILL: nothing in the CLI can react
    wait_for(lambda: not kernel.is_running() or kernel.status() == psutil.STATUS_ZOMBIE, timeout=15, what="the orphaned kernel to exit")
    status = traderbot(env, "status")                                          # the next command settles it
    assert status.returncode == 0 and f"run {run_id}: its process is gone; recorded as abandoned" in status.stdout
    r = get_run(database.connect(url), run_id)
    assert r["status"] == "abandoned" and "ended without settling the run" in r["error"]
    assert table_rows(url, "run_locks") == []
    assert traderbot(env, "run", "daily", "-p", "as_of=2022-12-27").returncode == 0


def test_a_lifted_kill_switch_trades_the_session_it_denied_and_nothing_twice(tmp_path):
    from decimal import Decimal
    from traderbot.execution.manager import ledger_problems
    from traderbot.store import ledger
    env, url, _ = environment(tmp_path)
    eng = database.open_store(url)
    acct = ledger.ensure_account(eng, "default", "paper", Decimal(1_000_000))
    ledger.set_trading_state(eng, acct, "halted", "operator:test", "maintenance")
    halted = traderbot(env, "run", "daily", "-p", "as_of=2022-12-28")      # the account's first session: it wants to trade
    assert halted.returncode == 0, halted.stderr
    orders = table_rows(url, "orders")
    assert orders and all(o["status"] == "denied" and o["reason"].startswith("TRADING_HALTED") for o in orders)
    lift = traderbot(env, "trading-state", "active", "--reason", "maintenance done")
    assert lift.returncode == 0, lift.stderr
    rerun = traderbot(env, "run", "daily", "-p", "as_of=2022-12-28")
    assert rerun.returncode == 0 and f"re-planned {len(orders)} denied orders" in rerun.stdout, rerun.stdout + rerun.stderr
    after = table_rows(url, "orders")
    fresh = [o for o in after if o["replaces"]]
    assert len(fresh) == len(orders) and {o["replaces"] for o in fresh} == {o["client_order_id"] for o in orders}
    assert all(o["status"] == "filled" and o["client_order_id"].endswith("-r1") for o in fresh)
    fills = len(table_rows(url, "paper_fills"))
    third = traderbot(env, "run", "daily", "-p", "as_of=2022-12-28")          # nothing left to do, nothing sent twice
    assert third.returncode == 0 and "re-planned" not in third.stdout
    assert len(table_rows(url, "paper_fills")) == fills and len(table_rows(url, "orders")) == len(after)
    assert ledger_problems(eng, acct) == []


def _future_store(path):
    "A SQLite store stamped with a schema revision this traderbot does not know."
    import sqlite3
    with sqlite3.connect(path) as con:
        con.execute("create table alembic_version (version_num varchar(32) primary key)"); con.execute("insert into alembic_version values ('9999')")


ONE_LINERS = [   # (id, store: None = fresh / 'junk' / 'future' / a URL, extra environment, command, what the line must say)
    ("not-a-database-file", "junk", {}, ["status"], "failed: DatabaseError: file is not a database"),
    ("unknown-revision", "future", {}, ["status"], "is at a schema revision this traderbot does not know"),
    ("url-not-a-url", "not a url", {}, ["status"], "store URL 'not a url' is not a database URL"),
    ("url-mysql", "mysql://u:secret@localhost/db", {}, ["status"], "mysql is not supported"),
    ("unknown-kernel", None, {"TRADERBOT__PIPELINE__KERNEL": "nokernel"}, ["run", "daily"], "no such Jupyter kernel"),
    ("date-beyond-calendar", None, {}, ["run", "daily", "--from", "2022-12-01", "--to", "2099-01-01"], "2099-01-01 is outside the XNYS calendar"),
    ("range-without-session", None, {}, ["run", "daily", "--from", "2022-12-24", "--to", "2022-12-26"], "no XNYS trading session from 2022-12-24"),
    ("day-first-date", None, {}, ["run", "daily", "-p", "as_of=03/01/2022"], "invalid date '03/01/2022': expected YYYY-MM-DD"),
    ("compact-date", None, {}, ["run", "daily", "-p", "as_of=20221228"], "invalid date '20221228': expected YYYY-MM-DD"),
    ("date-with-time", None, {}, ["backtest", "-p", "start=2022-12-28T23:00"], "parameter start='2022-12-28T23:00': expected a date as YYYY-MM-DD"),
    ("port-out-of-range", None, {}, ["dashboard", "--port", "99999"], "dashboard port 99999: expected 1 to 65535"),
]


@pytest.mark.parametrize("case,store,extra,args,says", ONE_LINERS, ids=[c[0] for c in ONE_LINERS])
def test_every_failure_is_one_line(tmp_path, case, store, extra, args, says):
    env, url, _ = environment(tmp_path)
    if store == "junk": (tmp_path / "traderbot.db").write_text("not a database")
    elif store == "future": _future_store(tmp_path / "traderbot.db")
    elif store: env["TRADERBOT__STORE__URL"] = store
    r = traderbot({**env, **extra}, *args, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert says in r.stderr, r.stderr
    if store is None and Path(url.removeprefix("sqlite:///")).exists():   # refused before a run was recorded
        assert runs_frame(database.connect(url)).empty


MORE_ONE_LINERS = [
    ("universe-unknown-symbol", {"TRADERBOT__DATA__UNIVERSE": "AAPL,ZZZZ"}, ["run", "daily"], "[data] universe: ZZZZ not in the data"),
    ("benchmark-not-an-index", {"TRADERBOT__DATA__BENCHMARK": "../../etc/passwd"}, ["run", "daily"], "benchmark"),
    ("live-without-opt-ins", {}, ["run", "daily", "-p", "mode=live"], "mode=live: live trading is not enabled, missing: [traderbot] mode = paper"),
    ("live-without-the-flag", {"TRADERBOT__TRADERBOT__MODE": "live", "TRADERBOT__BROKER__NAME": "alpaca", "ALPACA_API_KEY": "AKx", "ALPACA_SECRET_KEY": "s"},
     ["run", "daily", "-p", "mode=live"], "missing: TRADERBOT_LIVE_TRADING=yes is not in the environment"),
]


@pytest.mark.parametrize("case,extra,args,says", MORE_ONE_LINERS, ids=[c[0] for c in MORE_ONE_LINERS])
def test_settings_that_would_do_nothing_are_refused_in_one_line(tmp_path, case, extra, args, says):
    env, url, _ = environment(tmp_path)
    r = traderbot({**env, **extra}, *args, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
    assert not Path(url.removeprefix("sqlite:///")).exists() or runs_frame(database.connect(url)).empty   # nothing was run


def test_a_universe_with_nothing_to_pick_says_so(tmp_path):
    env, url, _ = environment(tmp_path)
    r = traderbot({**env, "TRADERBOT__DATA__UNIVERSE": "AAPL,MSFT"}, "run", "daily")   # both fell over the year to 2022-12-27
    assert r.returncode == 0, r.stderr
    assert "0 orders planned" in r.stdout and "no symbol of 2 qualified at 2022-12-27" in r.stdout and "the target is all cash" in r.stdout


READER = """
import sys, time
from pathlib import Path
from traderbot.store import database, ledger
from traderbot.store.runs import runs_frame
eng, stop, n = database.connect(sys.argv[1]), Path(sys.argv[2]), 0
while not stop.exists():                      # what the dashboards read, as fast as it can
    ledger.positions_frame(eng, "default"); ledger.equity_curve(eng, "default"); ledger.alerts_frame(eng, "default"); runs_frame(eng)
    n += 1
print(n)
"""


def test_l2_a_pipeline_a_dashboard_reader_and_a_reconciler_share_one_sqlite_file(tmp_path):
    "Three processes on one SQLite file: a backfill, a dashboard-like reader and repeated reconciliations; no lost update, no lock escaping."
    from test_reliability import assert_ledger
    from traderbot.brokers.factory import make_broker
    from traderbot.config import load_settings
    from traderbot.data.bars import session_prices
    from traderbot.data.sample import load_closes
    env, url, _ = environment(tmp_path)
    env["TRADERBOT__PIPELINE__LOCK_WAIT_S"] = "600"   # a reconciliation waits out a whole session, however slow a loaded machine makes it
    assert traderbot(env, "run", "daily", "-p", "as_of=2022-12-20").returncode == 0        # the account and its first trades
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, url, str(stop)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = start(env, "run", "daily", "--from", "2022-12-21", "--to", "2022-12-28")
    recs = []
    while run.poll() is None: recs.append(traderbot(env, "reconcile"))                    # each waits for the lock a session holds
    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert run.returncode == 0, run.stderr.read()
    assert reader.returncode == 0 and int(out) > 0 and "locked" not in err, err
    assert recs and all(r.returncode == 0 and "reconciliation with paper: clean" in r.stdout for r in recs), [r.stdout + r.stderr for r in recs]
    runs = runs_frame(database.connect(url))
    assert list(runs.status) == ["succeeded"] * 6                                           # 2022-12-20 and the five sessions to 12-28
    cfg = load_settings(ROOT / "settings.ini", env={"TRADERBOT__STORE__URL": url})
    px = load_closes(); day = px.index[-1]
    eng = database.connect(url)
    broker = make_broker(eng, cfg, session_prices(px, day), pd.Timestamp("2022-12-28 21:00", tz="UTC"))
    assert_ledger(eng, ledger.account_id(eng, "default"), broker)

"""Research and production on one decision path (issue 10).

- Parity: a backfill through the papermill daily pipeline (`traderbot run daily --account ... --from ... --to ...`)
  into a fresh store, and the production replay (`traderbot.replay.replay`) of the same sessions, give identical
  orders (symbol, side, quantity, status), fills (price, commission) and equity to the cent.
- Time only moves forward: a run or a backfill range that starts before the account's latest session is refused
  before anything is stored, naming both dates.
- The vectorized research backtest (vectorbt) stays within a stated distance of the replay on the default strategy.
"""
import os, subprocess, sys
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from traderbot.config import for_account, load_settings
from traderbot.data.sample import load_benchmark, load_closes
from traderbot.replay import replay
from traderbot.store import database, ledger
from traderbot.store.runs import runs_frame
from traderbot.strategy import Strategy, scheduled

ROOT = Path(__file__).resolve().parents[1]
TRADERBOT = [str(Path(sys.executable).parent / "traderbot")]


def sandbox(tmp_path, *extra_settings: str):
    "A settings.ini (the repository's, plus `extra_settings` lines appended to their sections) with its own store and reports."
    text = (ROOT / "settings.ini").read_text()
    for line in extra_settings:
        key = line.split("=")[0].strip()
        text = "\n".join(l for l in text.splitlines() if l.split("=")[0].strip() != key)   # the override replaces the key
        text = text.replace("[strategy]\n", f"[strategy]\n{line}\n")
    path = tmp_path / "settings.ini"
    if not (tmp_path / "nbs").exists(): (tmp_path / "nbs").symlink_to(ROOT / "nbs")   # the pipelines live beside settings.ini
    path.write_text(text.replace("path = data/sample", f"path = {ROOT / 'data' / 'sample'}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADERBOT")}
    env.update(TRADERBOT_SETTINGS=str(path), TRADERBOT__STORE__URL=f"sqlite:///{tmp_path / 'traderbot.db'}",
               TRADERBOT__PIPELINE__REPORTS_DIR=str(tmp_path / "reports"), PYTHONUNBUFFERED="1")
    return env, path


def traderbot(env, *args, timeout=600):
    return subprocess.run([*TRADERBOT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


FROM, TO = "2022-12-09", "2022-12-16"     # six sessions; with `rebalance = every 3`: the first session and two scheduled ones


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory):
    "A fresh store in which the papermill daily pipeline backfilled account 'parity' over FROM..TO, every 3 sessions."
    tmp = tmp_path_factory.mktemp("parity")
    env, path = sandbox(tmp, "rebalance = every 3")
    r = traderbot(env, "run", "daily", "--account", "parity", "--from", FROM, "--to", TO)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = for_account(load_settings(path, env=env), "parity")
    return cfg, database.connect(cfg.store.url), r.stdout


def test_backfill_and_replay_give_the_same_orders_fills_and_equity(backfilled):
    cfg, eng, out = backfilled
    acct = ledger.account_id(eng, "parity")
    live_orders, live_fills = ledger.order_history(eng, acct), ledger.account_fills(eng, acct)
    live_equity = ledger.equity_history(eng, acct)
    rep = replay(cfg, load_closes(), FROM, TO, benchmark=load_benchmark())

    traded = rep.notes[~rep.notes.str.startswith("no rebalance")]
    assert len(traded) >= 3 and (rep.notes.str.startswith("scheduled")).sum() >= 2, rep.notes   # at least two scheduled rebalances
    assert out.count("no rebalance today (next: ") == len(rep.notes) - len(traded)            # the other sessions only marked to market
    cols = ["session", "client_order_id", "symbol", "side", "quantity", "status", "filled_quantity", "average_price"]
    assert len(live_orders) > 10
    pd.testing.assert_frame_equal(live_orders[cols].reset_index(drop=True), rep.orders[cols].reset_index(drop=True))
    paid = live_fills.groupby("client_order_id").commission.agg(lambda c: sum(c, Decimal(0)))
    assert [paid.get(c, Decimal(0)) for c in rep.orders.client_order_id] == list(rep.orders.commission)   # commissions to the cent (exactly)
    assert live_equity.round(2).to_dict() == rep.equity.round(2).to_dict()
    assert len(live_equity) == 6


def test_a_run_before_the_latest_session_is_refused_before_anything_is_stored(backfilled):
    cfg, eng, _ = backfilled
    n_runs = len(runs_frame(eng, limit=1000))
    env, _ = sandbox(Path(cfg.root), "rebalance = every 3")
    for args in (("-p", "as_of=2022-12-12"), ("--from", "2022-11-28", "--to", "2022-12-16")):
        r = traderbot(env, "run", "daily", "--account", "parity", *args)
        assert r.returncode == 1
        assert "account 'parity' was last run for 2022-12-16; a run for 2022-" in r.stderr and "fresh account" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert len(runs_frame(eng, limit=1000)) == n_runs                 # no run row, no report
    fresh = traderbot(env, "run", "daily", "--account", "fresh_2022", "-p", "as_of=2022-12-12")
    assert fresh.returncode == 0, fresh.stderr                        # a fresh account may start anywhere


def test_the_vectorized_backtest_stays_close_to_the_replay():
    """The fast research path (vectorbt on the strategy's `target_schedule`, fractional shares, no gate, no breakers,
    no minimum trade) against the replay over 2017-2022 with the default strategy: the measured gap in CAGR is
    within 1.5 percentage points and the daily returns correlate above 0.98 (measured when written: see the
    replay notebook for the numbers and their causes)."""
    from traderbot.research.backtest import performance, run_backtest
    from traderbot.strategy import target_schedule
    cfg = load_settings(ROOT / "settings.ini", env={})
    px, bench = load_closes(), load_benchmark()
    st = Strategy.build(cfg)
    start = next(d for d in px.loc["2017-01-01":].index if scheduled(st.calendar, d))   # both start on a scheduled rebalance
    rep = replay(cfg, px, start, None, strategy=st, benchmark=bench)
    fast = run_backtest(px, target_schedule(st, px, start=start), cost=st.cost, lag=0)
    r_fast = fast.returns().loc[start:]
    r_rep = rep.returns
    gap = abs(performance(r_fast)["CAGR"] - performance(r_rep)["CAGR"])
    assert gap < 0.015, gap
    assert r_fast.corr(r_rep) > 0.98, r_fast.corr(r_rep)

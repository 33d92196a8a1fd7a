"""Parameter search past one process: a sweep cut into pieces and a walk-forward's folds give the same table and
the same out-of-sample returns in this process, on loky workers and on a two-worker Dask `LocalCluster` on
127.0.0.1 (dashboard off); `traderbot run sweep` records every combination as a trial and reports DSR and PBO.
"""
import numpy as np
import pandas as pd
import pytest

from traderbot.core import CostModel
from traderbot.data.sample import load_closes
from traderbot.research.search import search_grid, sweep_pbo, walk_forward

GRID = {"fast": [3, 5, 10, 20, 40], "slow": [30, 60, 120]}


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def closes():
    return load_closes(["AAPL", "MSFT"])


def test_a_sweep_is_the_same_table_in_process_on_loky_and_on_dask(closes, scheduler):
    cost = CostModel(fees=0.001, slippage=0.0005)
    here = search_grid(closes, "ma_crossover", GRID, symbol="MSFT", cost=cost, partitions=8, workers=1)
    loky = search_grid(closes, "ma_crossover", GRID, symbol="MSFT", cost=cost, partitions=8, workers=2)
    dask = search_grid(closes, "ma_crossover", GRID, symbol="MSFT", cost=cost, partitions=8, scheduler=scheduler)
    pd.testing.assert_frame_equal(loky, here, check_exact=True)
    pd.testing.assert_frame_equal(dask, here, check_exact=True)
    assert len(here) == 5 * 3 - 1 and sweep_pbo(dask, "ma_crossover").pbo == sweep_pbo(here, "ma_crossover").pbo


def test_walk_forward_folds_are_identical_on_the_cluster(closes, scheduler):
    here = walk_forward(closes, "ma_crossover", GRID, folds=3, symbol="AAPL", workers=1, partitions=0)
    there = walk_forward(closes, "ma_crossover", GRID, folds=3, symbol="AAPL", scheduler=scheduler, partitions=0)
    pd.testing.assert_series_equal(there.returns, here.returns, check_exact=True)
    assert there.folds.params.tolist() == here.folds.params.tolist()


def test_traderbot_sweep_records_every_combination_and_reports_out_of_sample(tmp_path):
    from test_pipeline import environment, traderbot
    env, url, _ = environment(tmp_path)
    r = traderbot(env, "sweep", "ma_crossover", "--grid", "fast=5,10,20 slow=50,100", "--folds", "3", "--monte-carlo", "100",
                  "--from", "2005-01-03", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "6 combinations" in r.stdout and "PBO" in r.stdout, r.stdout
    from traderbot.store import database, runs
    tr = runs.trials_frame(database.connect(url), "sweeps")
    assert sorted(tr.name) == sorted(f"ma_crossover AAPL fast={f} slow={s}" for f in (5, 10, 20) for s in (50, 100))
    html = next((tmp_path / "reports" / "sweep").glob("*.html")).read_text()
    assert "walk-forward, out of sample" in html and "stationary bootstrap" in html


def test_traderbot_backtest_strategies_books_sleeves_together_with_monte_carlo(tmp_path):
    from test_pipeline import environment, traderbot
    env, url, _ = environment(tmp_path)
    r = traderbot(env, "backtest", "--strategies", "momentum:0.5,band:0.3", "--monte-carlo", "100", "--from", "2015-01-02", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "momentum:0.5,band:0.3:" in r.stdout and "Monte Carlo Sharpe 5-95 %" in r.stdout, r.stdout
    html = next((tmp_path / "reports" / "strategies").glob("*.html")).read_text()
    assert "sum of sleeves" in html and "trade reshuffle" in html
    bad = traderbot(env, "backtest", "--strategies", "momentum:0.7,carry:0.3", timeout=600)
    assert bad.returncode != 0 and "carry" in bad.stderr, bad.stderr[-2000:]

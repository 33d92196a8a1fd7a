"""`traderbot.compute.fan_out` on a Dask cluster: a two-worker `LocalCluster` on 127.0.0.1 (processes, dashboard off) gives
the same results, in the same order, as this process and loky; seeds do not depend on where a task ran; a worker's error
keeps its type and names the item; a scheduler nobody answers at is a ConfigError.
"""
import numpy as np
import pandas as pd
import pytest

import traderbot.compute as compute
from traderbot.compute import fan_out
from traderbot.core import DataError
from traderbot.research.models import Baseline, synthetic_panel, walk_forward
from traderbot.research.stats import walk_forward_splits


def draws(x, seed=None):
    "A seeded task whose result depends on its item and seed only."
    return (x, np.random.default_rng(seed).normal(size=3).round(12).tolist())


def fails_on_2(x):
    if x == 2: raise DataError("no bars for XYZ")
    return x


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_dask_gives_the_same_seeded_results_as_this_process_and_loky(scheduler):
    serial = fan_out(draws, range(7), workers=1, seed=11, seeded=True)
    assert fan_out(draws, range(7), workers=2, seed=11, seeded=True) == serial
    assert fan_out(draws, range(7), scheduler=scheduler, seed=11, seeded=True) == serial
    assert [x for x, _ in serial] == list(range(7))


def test_dask_runs_on_the_cluster_workers(scheduler):
    import os
    pids = fan_out(_pid, range(6), scheduler=scheduler)
    assert os.getpid() not in pids and len(set(pids)) >= 1


def _pid(_):
    import os
    return os.getpid()


def test_a_worker_error_keeps_its_type_and_names_the_item(scheduler):
    with pytest.raises(DataError, match=r"chunk item 2 \(2\): no bars for XYZ"):
        fan_out(fails_on_2, range(4), scheduler=scheduler, desc="chunk")


def test_walk_forward_folds_are_identical_on_the_cluster(scheduler):
    panel, y = synthetic_panel(n_days=260, n_symbols=4, seed=3)
    dates = panel.index.get_level_values(0).unique()
    splits = walk_forward_splits(dates, test_size=40, min_train=120, purge=5)
    here = walk_forward({"baseline": Baseline}, panel, y, splits)
    there = walk_forward({"baseline": Baseline}, panel, y, splits, compute=compute.compute_config(scheduler=scheduler))
    pd.testing.assert_frame_equal(there.predictions, here.predictions, check_exact=True)
    pd.testing.assert_series_equal(there.labels, here.labels)


def test_a_scheduler_nobody_answers_at_is_a_config_error(monkeypatch):
    from traderbot.core import ConfigError
    monkeypatch.setattr(compute, "_CONNECT_S", 1)
    with pytest.raises(ConfigError, match="no Dask scheduler answers"):
        fan_out(draws, range(2), scheduler="tcp://127.0.0.1:1")


def test_cpcv_paths_are_identical_on_the_cluster(scheduler):
    "CPCV's C(6,2) = 15 splits are fitted as walk_forward folds; the stitched backtest paths come out the same on the cluster."
    from traderbot.research.stats import assemble_paths, cpcv
    panel, y = synthetic_panel(n_days=240, n_symbols=3, n_features=4, signal="planted", seed=5)
    dates = panel.index.get_level_values(0).unique()
    cv = cpcv(dates, pd.Series(dates.shift(3, freq="B"), index=dates), n_groups=6, k_test=2, embargo=2)
    paths = {}
    for where, compute_ in (("here", None), ("there", compute.compute_config(scheduler=scheduler))):
        wf = walk_forward({"baseline": Baseline}, panel, y, cv.splits, compute=compute_)
        by_fold = {f: wf.predictions.loc[f, "baseline"] for f in wf.predictions.index.get_level_values(0).unique()}
        paths[where] = assemble_paths(cv, by_fold)
    assert len(paths["here"]) == cv.n_paths == 5
    for a, b in zip(paths["here"], paths["there"]): pd.testing.assert_series_equal(a, b, check_exact=True)


def test_capacity_counts_the_cluster_worker_threads(scheduler):
    "A grid is cut for the cluster's worker threads (two here, one thread each), not for this machine's cores; `workers` caps it."
    from traderbot.compute import capacity
    assert capacity(scheduler=scheduler) == 2
    assert capacity(scheduler=scheduler, workers=5) == 5

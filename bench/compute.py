"""Part of `make bench` (bench/suite.py): a large sweep on a Dask `LocalCluster` of 2 workers against 1 worker.

The same MA-crossover grid (about 90,000 pairs over the AAPL sample's 8,313 sessions, roughly 750 million
bar-steps; the band grid this bench used first finished in a fraction of a second once the kernels skipped flat
stretches, too small for two processes to show) is swept through `traderbot.research.search.search_grid` with `scheduler=` pointing at each cluster
(127.0.0.1, dashboard off, one thread per worker; the pieces run numba on one thread, so the workers are the
parallelism). The gate first requires both clusters and this process to return the same table, bit for bit. Goal:
two workers >= 1.6x one worker. On a 2-core machine this is the ceiling of what two processes can give; the
numbers are what this machine measured on the run that wrote them.
"""
from __future__ import annotations
import argparse, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


FAMILY = "ma_crossover"


def grid(quick: bool) -> dict:
    if quick: return {"fast": list(range(2, 42, 2)), "slow": list(range(20, 420, 10))}
    return {"fast": list(range(2, 201)), "slow": list(range(10, 1001, 2))}


def measure(quick: bool) -> list:
    import pandas as pd
    from distributed import LocalCluster
    from traderbot.core import CostModel
    from traderbot.data.sample import load_closes
    from traderbot.research.search import search_grid
    closes, cost, g = load_closes(["AAPL"]), CostModel(fees=0.001, slippage=0.0005), grid(quick)
    run = lambda scheduler: search_grid(closes, FAMILY, g, symbol="AAPL", cost=cost, scheduler=scheduler)
    opts = dict(threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    with LocalCluster(n_workers=2, **opts) as two, LocalCluster(n_workers=1, **opts) as one:
        def gate() -> str:
            here = search_grid(closes, FAMILY, g, symbol="AAPL", cost=cost, workers=1)
            for name, address in (("2 workers", two.scheduler_address), ("1 worker", one.scheduler_address)):
                pd.testing.assert_frame_equal(run(address), here, check_exact=True, obj=f"sweep on {name}")
            return f"{len(here):,} combinations: identical tables in this process, on 1 worker and on 2 workers"
        r = harness.compare("compute", f"MA-crossover sweep on a Dask LocalCluster ({'quick' if quick else 'full'} grid)",
                            lambda: run(two.scheduler_address), lambda: run(one.scheduler_address),
                            ours_name="2 workers", peer_name="1 worker", reps=2 if quick else 3,
                            goal={"min_speedup": 1.6}, gate=gate)
    return [r]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    print(harness.table(measure(ap.parse_args(argv).quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

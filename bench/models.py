"""`make bench`: training time per epoch and batch inference latency of the LSTM and the Transformer, beside the logistic baseline's fit and predict in the same run, and the wall time of a small walk-forward study of all three.

The data are a seeded synthetic panel (`traderbot.research.models.synthetic_panel`): 20 symbols x 1,500 sessions x 15
features (30,000 rows), directions with a planted signal. Training rows are a window of `--train-days`
sessions (20 x 750 = 15,000 rows by default); each network trains `--epochs` epochs with early stopping off,
and the median epoch is shown, for each torch thread count in `--threads`. Inference latency is `predict` on
batches of `--batch` rows (p50 and p99 over `--batches` batches, after warm-up calls), which includes cutting
each row's window out of the 30,000-row panel and standardising it; its peer is the bare network forward on
the same, already built windows. The walk-forward study is three rolling folds of 100 sessions (train on the
previous `--train-days` sessions, five sessions purged) with each model at its default settings (early
stopping on).

Numbers are what this machine measured on this run; nothing here is a promise.
"""
from __future__ import annotations
import argparse, statistics, sys, time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from traderbot.research.models import Baseline, LSTMForecaster, TrainConfig, TransformerForecaster, synthetic_panel, walk_forward


@dataclass(frozen=True)
class Split:
    "A walk-forward fold: train and test sessions."
    train: pd.DatetimeIndex
    test: pd.DatetimeIndex
    fold: int


def rolling_splits(dates:pd.DatetimeIndex, train_days:int, test_days:int, folds:int, purge:int=5) -> list[Split]:
    "The last `folds` blocks of `test_days` sessions, each trained on the `train_days` sessions before it less `purge`."
    starts = [len(dates) - (folds - k) * test_days for k in range(folds)]
    return [Split(dates[s - purge - train_days:s - purge], dates[s:s + test_days], k) for k, s in enumerate(starts)]


def ms(xs:list[float]) -> dict:
    "p50 and p99 of latencies given in seconds, in milliseconds."
    q = statistics.quantiles([x * 1000 for x in xs], n=100, method="inclusive")
    return {"p50 ms": q[49], "p99 ms": q[98]}


def timed(f, repeats:int) -> list[float]:
    "Wall times of `repeats` calls of `f`."
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter(); f(); out.append(time.perf_counter() - t0)
    return out


def networks(threads:int, epochs:int) -> dict:
    "The two networks at their default sizes, trained `epochs` epochs with early stopping off."
    cfg = replace(TrainConfig(), epochs=epochs, patience=epochs, threads=threads)
    return {"lstm": LSTMForecaster(train=cfg), "transformer": TransformerForecaster(train=cfg)}


def batches(rows:pd.MultiIndex, size:int, n:int, seed:int=0) -> list[pd.MultiIndex]:
    "`n` random batches of `size` rows (sorted, as a day's or a study's rows come)."
    rng = np.random.default_rng(seed)
    return [rows[np.sort(rng.choice(len(rows), size, replace=False))] for _ in range(n)]


def model_rows(panel, y, train, test, args) -> dict:
    "Per model and thread count: fit time, median epoch time, predict latency on batches, and the bare forward peer."
    out, bs = {}, batches(test, args.batch, args.batches)
    LSTMForecaster(train=TrainConfig(epochs=1, seq_len=5)).fit(panel, y, train[:2000])   # warm-up: torch's import and first calls
    fit = timed(lambda: Baseline().fit(panel, y, train), 3)
    m = Baseline().fit(panel, y, train)
    for b in bs[:3]: m.predict(panel, b)
    lat = [t for b in bs for t in timed(lambda: m.predict(panel, b), 1)]
    out["baseline (logistic regression)"] = {"fit s": statistics.median(fit), "epoch s": np.nan, "epochs": np.nan, **ms(lat)}
    for threads in args.threads:
        for name, net in networks(threads, args.epochs).items():
            t0 = time.perf_counter(); net.fit(panel, y, train); fit_s = time.perf_counter() - t0
            for b in bs[:3]: net.predict(panel, b)
            lat = [t for b in bs for t in timed(lambda: net.predict(panel, b), 1)]
            out[f"{name}, {threads} thread(s)"] = {"fit s": fit_s, "epoch s": float(net.history.seconds.median()), "epochs": len(net.history), **ms(lat)}
            xs = [net.inputs(panel, b) for b in bs]
            out[f"{name}, {threads} thread(s): bare forward (peer)"] = {"fit s": np.nan, "epoch s": np.nan, "epochs": np.nan,
                                                                       **ms([t for x in xs for t in timed(lambda: net.logits(x), 1)])}
    return out


def study(panel, y, args) -> pd.DataFrame:
    "Wall time of a rolling three-fold walk-forward study of the three models at their defaults, and their accuracy."
    dates = panel.index.get_level_values(0).unique()
    factories = {"baseline": Baseline, "lstm": LSTMForecaster, "transformer": TransformerForecaster}
    t0 = time.perf_counter()
    res = walk_forward(factories, panel, y, rolling_splits(dates, args.train_days, 100, 3))
    wall = time.perf_counter() - t0
    s = res.summary()
    s["fit s per fold"] = res.timings.fit_s.groupby(level="model").mean()
    s["predict s per fold"] = res.timings.predict_s.groupby(level="model").mean()
    s.attrs["wall"] = wall
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--days", type=int, default=1500)
    p.add_argument("--features", type=int, default=15)
    p.add_argument("--train-days", type=int, default=750, help="sessions in a training window")
    p.add_argument("--epochs", type=int, default=3, help="epochs timed per network (early stopping off)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    p.add_argument("--batch", type=int, default=256, help="rows per inference batch")
    p.add_argument("--batches", type=int, default=50, help="inference batches timed")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    panel, y = synthetic_panel(args.symbols, args.days, args.features, signal="planted", seed=0)
    dates = panel.index.get_level_values(0).unique()
    t = panel.index.get_level_values(0)
    train = panel.index[(t >= dates[-args.train_days - 305]) & (t < dates[-305])]
    test = panel.index[t >= dates[-300]]
    table = pd.DataFrame(model_rows(panel, y, train, test, args)).T
    print(f"models on a synthetic panel of {args.symbols} symbols x {args.days} sessions x {args.features} features; "
          f"training window {len(train):,} rows; inference batches of {args.batch} rows; {time.strftime('%Y-%m-%d %H:%M')} on this machine:")
    with pd.option_context("display.width", 200):
        print(table.to_string(formatters={"fit s": "{:.2f}".format, "epoch s": "{:.3f}".format, "epochs": "{:.0f}".format,
                                          "p50 ms": "{:.2f}".format, "p99 ms": "{:.2f}".format}, na_rep="-"))
        s = study(panel, y, args)
        print(f"\nwalk-forward, 3 rolling folds x 100 sessions (training windows of {args.train_days} sessions, "
              f"default settings, {TrainConfig().threads} thread(s)): wall time {s.attrs['wall']:.1f} s")
        print(s.to_string(formatters={"accuracy": "{:.3f}".format, "log_loss": "{:.4f}".format, "fit_s": "{:.1f}".format,
                                      "fit s per fold": "{:.2f}".format, "predict s per fold": "{:.3f}".format}))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

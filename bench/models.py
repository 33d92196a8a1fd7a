"""Part of `make bench` (bench/suite.py): training time per epoch and batch inference latency of the LSTM and the Transformer, beside the logistic baseline's fit and predict in the same run, and the wall time of a small walk-forward study of all three.

The data are a seeded synthetic panel (`traderbot.research.models.synthetic_panel`): 20 symbols x 1,500 sessions x 15
features (30,000 rows), directions with a planted signal. Training rows are a window of 750 sessions (20 x 750 =
15,000 rows); each network trains 3 epochs with early stopping off, for 1 and 2 torch threads. The results
(bench/harness.py: median and spread):

- epoch: each network's epochs (`history.seconds`) beside the logistic baseline's whole fit (3 fits) on the same
  rows. Gate: the network trained every epoch, every loss finite.
- predict: `predict` on batches of 256 rows (50 batches, interleaved, after warm-up calls), which includes cutting
  each row's window out of the 30,000-row panel and standardising it, beside the bare network forward on the same,
  already built windows (p99 of each side kept, and the baseline's predict on the same batches). Gate: `predict`
  equals the sigmoid of the bare forward's logits (1e-12).
- walk-forward: three rolling folds of 100 sessions (train on the previous 750 sessions, five purged), each model
  at its default settings (early stopping on); each network's fit + predict per fold beside the baseline's. Gate:
  every test row has a finite P(up) in [0, 1] from every model; the accuracies are reported.
No goal: the numbers inform. `quick`: 5 symbols x 400 sessions x 5 features, windows of 150 sessions, 2 epochs,
1 thread, 2 batches of 64, folds of 50 sessions with 2-epoch, 1-thread networks (a smoke test, not numbers to quote).

Numbers are what this machine measured on this run; nothing here is a promise.
"""
from __future__ import annotations
import argparse, itertools, statistics, sys, time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from traderbot.research.models import Baseline, LSTMForecaster, TrainConfig, TransformerForecaster, synthetic_panel, walk_forward  # noqa: E402

BENCH = "models"
FULL = dict(symbols=20, days=1500, features=15, train_days=750, test_days=100, epochs=3, threads=[1, 2], batch=256, batches=50, study_epochs=None)
QUICK = dict(symbols=5, days=400, features=5, train_days=150, test_days=50, epochs=2, threads=[1], batch=64, batches=2, study_epochs=2)   # study: 1 thread


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


def networks(threads:int, epochs:int) -> dict:
    "The two networks at their default sizes, trained `epochs` epochs with early stopping off."
    cfg = replace(TrainConfig(), epochs=epochs, patience=epochs, threads=threads)
    return {"lstm": LSTMForecaster(train=cfg), "transformer": TransformerForecaster(train=cfg)}


def batches(rows:pd.MultiIndex, size:int, n:int, seed:int=0) -> list[pd.MultiIndex]:
    "`n` random batches of `size` rows (sorted, as a day's or a study's rows come)."
    rng = np.random.default_rng(seed)
    return [rows[np.sort(rng.choice(len(rows), size, replace=False))] for _ in range(n)]


def p99(xs:list[float]) -> float:
    "The 99th percentile (inclusive method) of `xs`."
    return statistics.quantiles(xs, n=100, method="inclusive")[98] if len(xs) > 1 else xs[0]


def seconds(f) -> float:
    "Wall seconds of one call of `f`."
    t0 = time.perf_counter(); f(); return time.perf_counter() - t0


def epoch_gate(net, epochs:int) -> str:
    "Raise unless `net` trained `epochs` epochs with finite losses."
    h = net.history
    if len(h) != epochs or not np.isfinite(h[["train_loss", "val_loss"]].to_numpy()).all():
        raise AssertionError(f"models {net.name}: {len(h)} epochs (expected {epochs}), losses {h[['train_loss', 'val_loss']].to_numpy().ravel()[:6]}")
    return f"{epochs} epochs, every loss finite (last train log-loss {h.train_loss.iloc[-1]:.4f})"


def predict_gate(net, panel, bs) -> str:
    "Raise unless `predict` equals the sigmoid of the bare forward on the same windows (1e-12)."
    from scipy.special import expit
    gap = max(np.abs(net.predict(panel, b).to_numpy() - expit(net.logits(net.inputs(panel, b)))).max() for b in bs)
    if not gap <= 1e-12: raise AssertionError(f"models {net.name}: predict differs from the bare forward by {gap:.1e}")
    return f"predict = sigmoid(bare forward) on {len(bs)} batches: worst gap {gap:.1e} (<= 1e-12)"


def network_cases(panel, y, train, test, cfg:dict, reps_fit:int) -> list[dict]:
    "Per network and thread count: its epochs beside the baseline's fit, and its predict beside the bare forward."
    bs = batches(test, cfg["batch"], cfg["batches"])
    LSTMForecaster(train=TrainConfig(epochs=1, seq_len=5)).fit(panel, y, train[:2000])   # warm-up: torch's import and first calls
    Baseline().fit(panel, y, train)
    fit = [seconds(lambda: Baseline().fit(panel, y, train)) for _ in range(reps_fit)]
    base = Baseline().fit(panel, y, train)
    base_lat = seconds(lambda: [base.predict(panel, b) for b in bs]) / len(bs)
    out, rows = [], f"{len(train):,} rows"
    for threads in cfg["threads"]:
        for name, net in networks(threads, cfg["epochs"]).items():
            net.fit(panel, y, train)
            out.append(harness.result(BENCH, f"{name}, {threads} thread(s): one epoch, {rows}", f"{name} epoch", "logistic baseline fit",
                                      net.history.seconds.tolist(), fit, gate=epoch_gate(net, cfg["epochs"])))
            checked = predict_gate(net, panel, bs[:3])
            xs = [net.inputs(panel, b) for b in bs]
            for b in bs[:3]: net.predict(panel, b)
            ob, px = itertools.cycle(bs), itertools.cycle(xs)
            to, tp = harness.timed_pair(lambda: net.predict(panel, next(ob)), lambda: net.logits(next(px)), len(bs))
            out.append(harness.result(BENCH, f"{name}, {threads} thread(s): predict, batch of {cfg['batch']}", f"{name} predict",
                                      "bare network forward", to, tp, gate=checked, ours_p99=p99(to), peer_p99=p99(tp),
                                      baseline_predict=base_lat))
    return out


def study_cases(panel, y, cfg:dict) -> list[dict]:
    "A rolling three-fold walk-forward of the three models: each network's fit + predict per fold beside the baseline's."
    dates = panel.index.get_level_values(0).unique()
    tc = TrainConfig() if cfg["study_epochs"] is None else TrainConfig(epochs=cfg["study_epochs"], threads=1)
    factories = {"baseline": Baseline, "lstm": lambda: LSTMForecaster(train=tc), "transformer": lambda: TransformerForecaster(train=tc)}
    res = walk_forward(factories, panel, y, rolling_splits(dates, cfg["train_days"], cfg["test_days"], 3))
    p = res.predictions.to_numpy()
    if len(p) == 0 or not (np.isfinite(p) & (p >= 0) & (p <= 1)).all(): raise AssertionError("models walk-forward: a P(up) is missing or outside [0, 1]")
    acc = res.summary().accuracy
    checked = f"{len(p):,} test rows, every P(up) finite in [0, 1]; accuracy " + ", ".join(f"{m} {a:.3f}" for m, a in acc.items())
    per_fold = (res.timings.fit_s + res.timings.predict_s)
    return [harness.result(BENCH, f"walk-forward, 3 folds x {cfg['test_days']} sessions: {m} fit + predict per fold", f"{m} fold",
                           "baseline fold", per_fold.loc[m].tolist(), per_fold.loc["baseline"].tolist(), gate=checked,
                           accuracy=float(acc[m]), baseline_accuracy=float(acc["baseline"]))
            for m in ("lstm", "transformer")]


def measure(quick:bool) -> list[dict]:
    "Epochs, predict latency and the walk-forward study; small sizes with `quick`."
    cfg = QUICK if quick else FULL
    panel, y = synthetic_panel(cfg["symbols"], cfg["days"], cfg["features"], signal="planted", seed=0)
    dates = panel.index.get_level_values(0).unique()
    t, hold = panel.index.get_level_values(0), 3 * cfg["test_days"]
    train = panel.index[(t >= dates[-cfg["train_days"] - hold - 5]) & (t < dates[-hold - 5])]
    test = panel.index[t >= dates[-hold]]
    return network_cases(panel, y, train, test, cfg, 2 if quick else 3) + study_cases(panel, y, cfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small panel and networks: a smoke test of the bench, not numbers to quote")
    print(harness.table(measure(ap.parse_args(argv).quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

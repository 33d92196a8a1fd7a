"""What every benchmark of `make bench` shares: its correctness gate runs first, ours and the peer are timed in
interleaved repetitions (ours-peer, then peer-ours, ...), each result keeps the median and the spread (min-max) of
its repetitions, and the suite writes every result to `reports/bench/` as JSON plus a plot.

A result is a plain dict (`compare` and `record` build them):
  bench, case        which benchmark and which case of it
  ours, peer         what was timed on each side (names)
  unit               "s" or "MB"
  ours_value, peer_value   medians;  ours_spread, peer_spread: [min, max]
  ratio              ours / peer (time or memory: below 1 means ours is smaller)
  goal               the stated target, e.g. {"max_ratio": 1.2} or {"min_speedup": 100}; None when the case only informs
  met                whether the goal was met on this run (None without a goal)
  gate               what the correctness gate checked and its worst gap, as text
Nothing here is a promise: the numbers are what this machine measured on the run that wrote them.
"""
from __future__ import annotations
import json, statistics, time, tracemalloc
from pathlib import Path
from typing import Callable


def _met(ratio: float, goal: dict | None) -> bool | None:
    if not goal: return None
    if "max_ratio" in goal: return bool(ratio <= goal["max_ratio"])
    if "min_speedup" in goal: return bool(ratio > 0 and 1 / ratio >= goal["min_speedup"])
    raise ValueError(f"unknown goal {goal}")


TAKEN: list = []   # every result built in this process, in order: the suite keeps them when a benchmark fails midway


def result(bench: str, case: str, ours: str, peer: str, ours_values: list, peer_values: list, *, unit: str = "s",
           goal: dict | None = None, gate: str = "", **extra) -> dict:
    "One result from the repetitions of each side."
    o, p = statistics.median(ours_values), statistics.median(peer_values)
    ratio = o / p if p else float("inf")
    r = dict(bench=bench, case=case, ours=ours, peer=peer, unit=unit, ours_value=o, peer_value=p,
             ours_spread=[min(ours_values), max(ours_values)], peer_spread=[min(peer_values), max(peer_values)],
             reps=len(ours_values), ratio=ratio, goal=goal, met=_met(ratio, goal), gate=gate, **extra)
    TAKEN.append(r)
    return r


def timed_pair(ours: Callable, peer: Callable, reps: int) -> tuple[list, list]:
    "Wall times of `ours()` and `peer()`, `reps` each, interleaved and alternating which goes first."
    to, tp = [], []
    for i in range(reps):
        for side in ((ours, to), (peer, tp)) if i % 2 == 0 else ((peer, tp), (ours, to)):
            t = time.perf_counter(); side[0](); side[1].append(time.perf_counter() - t)
    return to, tp


def compare(bench: str, case: str, ours: Callable, peer: Callable, *, ours_name: str = "traderbot", peer_name: str,
            reps: int = 5, goal: dict | None = None, gate: Callable[[], str] | None = None, warmup: bool = True, **extra) -> dict:
    "Gate first (`gate()` raises when the two sides disagree and returns what it checked), then interleaved timings."
    checked = gate() if gate else ""
    if warmup: ours(); peer()
    to, tp = timed_pair(ours, peer, reps)
    return result(bench, case, ours_name, peer_name, to, tp, goal=goal, gate=checked, **extra)


def peak_mb(fn: Callable) -> float:
    "tracemalloc's peak, in MB, of one call of `fn` (numpy buffers included; numba's own allocations are numpy arrays too)."
    tracemalloc.start(); tracemalloc.reset_peak()
    try: fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    return peak / 2**20


def write(results: list, folder: Path, meta: dict) -> tuple[Path, Path]:
    "`results` as `folder/bench.json` (with `meta`) and a plot of every ratio against its goal as `folder/bench.png`."
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / "bench.json"
    js.write_text(json.dumps(dict(meta=meta, results=results), indent=1, default=float))
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = [f"{r['bench']}: {r['case']}" for r in results]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(results) + 1.2))
    y = range(len(results))
    colors = ["tab:green" if r["met"] else "tab:red" if r["met"] is False else "tab:gray" for r in results]
    ax.barh(list(y), [r["ratio"] for r in results], color=colors)
    for i, r in zip(y, results):
        g = r["goal"] or {}
        if "max_ratio" in g: ax.plot([g["max_ratio"]] * 2, [i - 0.4, i + 0.4], "k-")
        if "min_speedup" in g: ax.plot([1 / g["min_speedup"]] * 2, [i - 0.4, i + 0.4], "k-")
    ax.set_yticks(list(y), labels, fontsize=7); ax.invert_yaxis(); ax.set_xscale("log"); ax.axvline(1, color="gray", lw=0.5)
    ax.set_xlabel("ours / peer (time or memory; < 1: ours smaller); black tick: the goal; green met, red missed, gray no goal")
    fig.tight_layout(); png = folder / "bench.png"; fig.savefig(png, dpi=110); plt.close(fig)
    return js, png


def table(results: list) -> str:
    "A markdown table of the results (the README's performance table is pasted from this)."
    def fmt(v, unit): return f"{v * 1e3:.3g} ms" if unit == "s" and v < 1 else f"{v:.3g} {unit}"
    def goal(g): return "" if not g else (f"≤ {g['max_ratio']}×" if "max_ratio" in g else f"≥ {g['min_speedup']}× faster")
    lines = ["| bench | case | traderbot | peer | ours / peer | goal | met |", "|---|---|---|---|---|---|---|"]
    for r in results:
        sp = "" if r["ratio"] >= 1 or r["unit"] != "s" else f" ({1 / r['ratio']:.3g}× faster)"
        lines.append(f"| {r['bench']} | {r['case']} | {r['ours']}: {fmt(r['ours_value'], r['unit'])} | {r['peer']}: "
                     f"{fmt(r['peer_value'], r['unit'])} | {r['ratio']:.3g}{sp} | {goal(r['goal'])} | "
                     f"{'' if r['met'] is None else 'yes' if r['met'] else 'no'} |")
    return "\n".join(lines)

"""`make bench`: every benchmark, each beside its peer in the same run, written to reports/bench/ (JSON + plot).

Each module below has `measure(quick: bool) -> list[dict]` (results built by bench/harness.py: correctness gate
first, interleaved repetitions, median and spread). `--only sweep,portfolio` runs some; `--quick` runs the small
cases (a smoke test of the benches themselves, not numbers to quote); `--readme` puts this run's rows into the
performance table in README.md (between `<!-- bench:start -->` and `<!-- bench:end -->`): the benchmarks it ran
replace their rows, the others keep theirs, and the line under the table says when each benchmark last ran.
"""
from __future__ import annotations
import argparse, importlib, os, platform, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402

MODULES = ["sweep", "compute", "coldstart", "portfolio", "orders", "risk", "models", "replay", "sentiment", "rl"]


def readme_table(md: str, names: list[str], when: str) -> None:
    """Put this run's rows into README.md's table (between `<!-- bench:start -->` and `<!-- bench:end -->`).

    Rows of the benchmarks this run measured replace their old rows; the other benchmarks' rows stay, so a run of
    some benchmarks (`--only`) refreshes its part of the table. The line under the table says when each ran."""
    p = ROOT / "README.md"; s = p.read_text()
    a, b = "<!-- bench:start -->", "<!-- bench:end -->"
    if a not in s or b not in s: raise SystemExit(f"README.md has no {a} ... {b} markers")
    old = s[s.index(a) + len(a):s.index(b)].strip().splitlines()
    rows = {m: [] for m in MODULES}
    runs = dict(x.split("=", 1) for x in next((l for l in old if l.startswith("Ran: ")), "Ran: ")[5:].split("; ") if "=" in x)
    for line in old:
        bench = line.split("|")[1].strip() if line.startswith("| ") else ""
        if bench in rows and bench not in names: rows[bench].append(line)
    new = md.splitlines()
    for line in new[2:]:
        bench = line.split("|")[1].strip()
        if bench in names: rows.setdefault(bench, []).append(line)
    runs.update({n: when for n in names})
    ran = "Ran: " + "; ".join(f"{m}={runs[m]}" for m in MODULES if m in runs)
    body = "\n".join(new[:2] + [l for m in rows for l in rows[m]] + ["", ran])
    p.write_text(s[:s.index(a) + len(a)] + "\n" + body + "\n" + s[s.index(b):])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated benchmark names (default: all of " + ", ".join(MODULES) + ")")
    ap.add_argument("--quick", action="store_true", help="small cases: checks the benches run, not numbers to quote")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"), help="folder for bench.json and bench.png")
    ap.add_argument("--readme", action="store_true", help="write this run's table into README.md")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or MODULES
    unknown = [n for n in names if n not in MODULES]
    if unknown: raise SystemExit(f"unknown benchmark {unknown[0]!r}: expected one of {MODULES}")
    results, t0, failed = [], time.perf_counter(), []
    for name in names:
        t, before = time.perf_counter(), len(harness.TAKEN)
        try: rows = importlib.import_module(name).measure(args.quick)
        except Exception as e:                        # keep what this benchmark measured before it failed, and go on
            rows = harness.TAKEN[before:]
            failed.append(f"{name}: {type(e).__name__}: {e}")
            print(f"{name} FAILED after {len(rows)} results: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        print(f"{name}: {len(rows)} results in {time.perf_counter() - t:.0f} s", flush=True)
        results += rows
        harness.write(results, Path(args.out), dict(partial=True, done=names[:names.index(name) + 1]))   # a long suite stopped midway keeps what it measured
    import numba
    meta = dict(when=time.strftime("%Y-%m-%d %H:%M:%S"), machine=platform.platform(), python=platform.python_version(),
                cpus=os.cpu_count(), numba_threads=numba.get_num_threads(), quick=args.quick, benches=names,
                seconds=round(time.perf_counter() - t0, 1), failed=failed)
    js, png = harness.write(results, Path(args.out), meta)
    md = harness.table(results)
    print(md)
    print(f"\n{len(results)} results, {sum(r['met'] is True for r in results)} goals met, {sum(r['met'] is False for r in results)} "
          f"missed; written to {js} and {png} ({meta['seconds']} s)")
    if args.readme: readme_table(md, [n for n in names if not any(f.startswith(n + ":") for f in failed)], meta["when"][:16] + (" (quick)" if args.quick else ""))
    if failed: print("failed: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

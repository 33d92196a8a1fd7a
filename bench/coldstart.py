"""`make bench`: cold start, each fresh process timed next to its peer in the same run.

- `traderbot --help` against `python -c "import pandas"` (goal: at most 1.2x);
- importing each traderbot module against `import pandas` (goal: at most 2x; the worst modules are reported, every
  module's ratio is kept in the first row's `modules`). Alembic's env and revision scripts are left out: alembic
  loads them by path inside `traderbot db upgrade`, where alembic and SQLAlchemy are already loaded. The package's
  bytecode is brought up to date first, as `traderbot warmup` (the install step) does: with PYTHONDONTWRITEBYTECODE set,
  as on this machine, stale bytecode would make every import compile traderbot again;
- a trivial notebook through the pipeline runner's path (traderbot.pipeline imported, its `_execute_notebook`:
  papermill with the runner's arguments while a thread builds the HTML exporter, then the HTML report) against the kernel-start floor: start an ipykernel with jupyter_client and stop it
  (goal: at most 1.3x). A second, informational row leaves the HTML export out, to show its share.
- the same run from a warm runner, which is how `traderbot schedule` runs every pipeline (one long-lived process
  calling `run_pipeline`): in one process, the runner's `_execute_notebook` plus the HTML report, run after run,
  against starting and stopping a kernel in that same process. Imports are paid once there, so this is the per-run
  overhead (goal: at most 1.3x); the fresh-process rows above add the runner's one-time imports.
- a dashboard page's first response: the portfolio page requested the moment `traderbot dashboard`'s launcher
  (`start_dashboards`) has Voila answering, against the same page from a pre-heated Voila (its kernel parked at
  `wait_for_request`, `wait_preheated`). Each repetition starts a fresh Voila over an empty store (not timed).
Every side is a fresh `python` process (wall time, start-up included), interleaved with its peer.
Numbers are what this machine measured on this run; nothing here is a promise.
"""
from __future__ import annotations
import json, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import harness

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PANDAS = [PY, "-c", "import pandas"]
QUICK_MODULES = ["traderbot.cli", "traderbot.core", "traderbot.config", "traderbot.daily", "traderbot.pipeline",
                 "traderbot.store.ledger", "traderbot.research.sweep", "traderbot.risk.measures"]


def _run(cmd: list[str], cwd: Path | None = None) -> float:
    "Wall seconds of one fresh process; raises with its stderr when it fails."
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    dt = time.perf_counter() - t
    if r.returncode: raise RuntimeError(f"{' '.join(cmd[:3])}... exited {r.returncode}: {r.stderr.strip()[-400:]}")
    return dt


def _pair(ours: list[str], peer: list[str], reps: int, cwd: Path | None = None) -> tuple[list, list]:
    "Interleaved wall times of two commands (one warm-up run each first, for the file cache)."
    _run(ours, cwd); _run(peer, cwd)
    return harness.timed_pair(lambda: _run(ours, cwd), lambda: _run(peer, cwd), reps)


def modules() -> list[str]:
    "Every traderbot module but the package markers, nbdev's index and the migrations (alembic loads them by path)."
    pkg = ROOT / "traderbot"
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in pkg.rglob("*.py")
                  if p.name not in ("__init__.py", "_modidx.py") and "migrations" not in p.parts)


def help_case(reps: int) -> dict:
    exe = shutil.which("traderbot", path=str(Path(PY).parent)) or "traderbot"
    o, p = _pair([exe, "--help"], PANDAS, reps)
    return harness.result("coldstart", "traderbot --help", "traderbot --help", "import pandas", o, p, goal={"max_ratio": 1.2},
                          gate="exit code 0")


def module_cases(names: list[str], reps: int, top: int) -> list[dict]:
    rows = []
    for m in names:
        o, p = _pair([PY, "-c", f"import {m}"], PANDAS, reps)
        rows.append(harness.result("coldstart", f"import {m}", m, "import pandas", o, p, goal={"max_ratio": 2.0}, gate="import succeeds"))
    rows.sort(key=lambda r: -r["ratio"])
    out = rows[:top]
    out[0]["case"] = f"worst module: import {out[0]['ours']}"
    out[0]["modules"] = {r["ours"]: round(r["ratio"], 3) for r in rows}
    out[0]["modules_met"] = f"{sum(r['met'] for r in rows)} of {len(rows)}"
    return out


_TRIVIAL_RUN = """import sys
from pathlib import Path
import traderbot.pipeline as P
P._keep_out_rfc3987()
nb, out = sys.argv[1], Path(sys.argv[2])
if sys.argv[3] == "html":
    P._execute_notebook(nb, out, {"x": 2}, "python3", out.parent, 600)   # the runner's call (it builds the exporter meanwhile)
    P._export_html(out)
else:
    import papermill as pm
    pm.execute_notebook(nb, str(out), parameters={"x": 2}, kernel_name="python3", progress_bar=False, log_output=False,
                        extra_arguments=["--IPKernelApp.log_level=ERROR"])
"""
_KERNEL_FLOOR = """from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="python3", extra_arguments=["--IPKernelApp.log_level=ERROR"])
kc.stop_channels(); km.shutdown_kernel(now=True)
"""


_WARM_RUNS = """import json, sys, time
from pathlib import Path
import traderbot.pipeline as P
P._keep_out_rfc3987()
from jupyter_client.manager import start_new_kernel
nb, folder, reps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
def run(i):
    out = folder / f"warm{i}.ipynb"
    P._execute_notebook(nb, out, {"x": 2}, "python3", folder, 600); P._export_html(out)
def floor(i):
    km, kc = start_new_kernel(kernel_name="python3", extra_arguments=["--IPKernelApp.log_level=ERROR"])
    kc.stop_channels(); km.shutdown_kernel(now=True)
run(-1); floor(-1)                                   # the one-time imports and the exporter's templates, outside the clock
ours, peer = [], []
for i in range(reps):
    for fn, acc in ((run, ours), (floor, peer)) if i % 2 == 0 else ((floor, peer), (run, ours)):
        t = time.perf_counter(); fn(i); acc.append(time.perf_counter() - t)
print(json.dumps([ours, peer]))
"""


def _trivial_notebook(folder: Path) -> Path:
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell("x + 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = folder / "trivial.ipynb"; nbformat.write(nb, p)
    return p


def papermill_cases(reps: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d); nb = _trivial_notebook(d)
        ours = [PY, "-c", _TRIVIAL_RUN, str(nb), str(d / "out.ipynb"), "html"]
        bare = [PY, "-c", _TRIVIAL_RUN, str(nb), str(d / "out2.ipynb"), "nohtml"]
        floor = [PY, "-c", _KERNEL_FLOOR]
        o, p = _pair(ours, floor, reps, d)
        if "x + 1" not in (d / "out.ipynb").read_text() or not (d / "out.html").is_file(): raise RuntimeError("trivial run wrote no notebook/report")
        rows = [harness.result("coldstart", "papermill trivial run (runner path, HTML report)", "traderbot pipeline runner",
                               "kernel start+stop", o, p, goal={"max_ratio": 1.3}, gate="executed notebook and HTML written")]
        o2, p2 = _pair(bare, floor, reps, d)
        rows.append(harness.result("coldstart", "papermill trivial run, no HTML export", "runner without HTML", "kernel start+stop",
                                   o2, p2, gate="executed notebook written"))
        r = subprocess.run([PY, "-c", _WARM_RUNS, str(nb), str(d), str(max(reps, 5))], capture_output=True, text=True, cwd=d, timeout=600)
        if r.returncode: raise RuntimeError(f"warm runner: {r.stderr[-1500:]}")
        o3, p3 = json.loads(r.stdout.strip().splitlines()[-1])
        if not all((d / f"warm{i}.html").is_file() and "x + 1" in (d / f"warm{i}.ipynb").read_text() for i in range(len(o3))):
            raise RuntimeError("warm runner wrote no notebook/report")
        rows.insert(0, harness.result("coldstart", "papermill per-run overhead in a warm runner (the scheduler's path, HTML report)",
                                      "pipeline run (execute + HTML)", "kernel start+stop, same process", o3, p3, goal={"max_ratio": 1.3},
                                      gate="every run's executed notebook and HTML written"))
        rows[1]["case"] += " from a fresh process"
    return rows


def _page(port: int, token: str) -> str:
    "GET the portfolio dashboard with the token; its body (raises unless 200)."
    import http.client
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        con.request("GET", f"/voila/render/portfolio.ipynb?token={token}")
        r = con.getresponse(); body = r.read().decode(errors="replace")
        if r.status != 200: raise RuntimeError(f"portfolio page: HTTP {r.status}")
        return body
    finally: con.close()


def dashboard_cases(reps: int) -> list[dict]:
    "The portfolio page right after the launcher starts Voila, against the same page once a kernel is pre-heated."
    import os
    from traderbot.config import load_settings
    from traderbot.dashboard.serve import free_port, start_dashboards, stop_dashboards, wait_preheated
    first, warm, marks = [], [], set()
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "TRADERBOT_SETTINGS": str(ROOT / "settings.ini"), "TRADERBOT__STORE__URL": f"sqlite:///{d}/store.db"}
        cfg = load_settings(env=env)
        for _ in range(reps):
            proc, url = start_dashboards(cfg, port=free_port(), env=env, log_path=Path(d) / "voila.log", timeout_s=180)
            port, token = int(url.split(":")[2].split("/")[0]), url.split("token=")[1]
            try:
                t = time.perf_counter(); a = _page(port, token); first.append(time.perf_counter() - t)
                wait_preheated(proc, port)                                  # the pool refilled: its kernel is parked
                t = time.perf_counter(); b = _page(port, token); warm.append(time.perf_counter() - t)
                marks.add(("Portfolio" in a, "Portfolio" in b))
            finally: stop_dashboards(proc)
    if marks != {(True, True)}: raise RuntimeError(f"a page came back without its dashboard: {marks}")
    return [harness.result("coldstart", "dashboard: portfolio page as soon as `traderbot dashboard` answers",
                           "first response (kernel still heating)", "pre-heated Voila", first, warm,
                           gate=f"both pages rendered the portfolio dashboard ({reps} fresh Voila servers)")]


def measure(quick: bool) -> list[dict]:
    reps = 3 if quick else 7
    import compileall
    compileall.compile_dir(str(ROOT / "traderbot"), quiet=2)   # what `traderbot warmup` does at install
    rows = [help_case(reps)]
    rows += module_cases(QUICK_MODULES if quick else modules(), 2 if quick else 5, top=3 if quick else 5)
    rows += papermill_cases(2 if quick else 5)
    rows += dashboard_cases(1 if quick else 3)
    return rows


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0]); ap.add_argument("--quick", action="store_true")
    print(harness.table(measure(ap.parse_args().quick)))

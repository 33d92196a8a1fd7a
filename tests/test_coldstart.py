"""Cold start, checked without timing (bench/coldstart.py times it):

- `import traderbot.cli` (what `traderbot --help` runs) loads no pandas, numpy, SQLAlchemy or pydantic;
- importing every traderbot module loads none of the heavy libraries a module needs only inside a function;
- importing any module outside the store (and the paper venue, whose book is in it) loads no SQLAlchemy: they reach
  the store through `core.deferred`, which imports it at first use;
- numba's cache directory is fixed under the user's cache before numba is first imported (an explicit
  NUMBA_CACHE_DIR wins);
- jsonschema's optional `rfc3987_syntax` checker stays out of the pipeline runner and of the Voila process.
- `traderbot warmup` (the install step) leaves every module of the package with fresh bytecode, so a process started
  with PYTHONDONTWRITEBYTECODE (CI, many containers) does not compile traderbot again.
Each check runs in a fresh interpreter, so what an earlier test imported cannot hide a regression.
"""
from __future__ import annotations
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "traderbot"
# imported only inside the functions that use them (rl.vec makes its SB3 VecEnv subclass at first use)
HEAVY = ["vectorbt", "numba", "scipy.stats", "cvxpy", "riskfolio", "sklearn", "statsmodels", "torch", "transformers",
         "stable_baselines3", "papermill", "nbconvert", "nbformat", "matplotlib", "exchange_calendars", "jsonschema",
         "rfc3987_syntax", "httpx", "tenacity", "rich", "voila", "jupyter_client", "dask", "distributed", "lightgbm", "xgboost", "alpaca"]
NEEDS_AT_IMPORT = {"traderbot.store.migrations.env"}   # alembic's env script


def _python(code: str, **env) -> str:
    "stdout of `code` in a fresh interpreter (extra environment variables; None removes one)."
    e = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for k, v in env.items():
        if v is None: e.pop(k, None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=e, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


def _modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PKG.rglob("*.py")
                  if p.name not in ("__init__.py", "_modidx.py"))


def _loaded(names: list[str]) -> str:
    return f"import json, sys; print(json.dumps([h for h in {names!r} if sys.modules.get(h) is not None]))"


def test_the_cli_loads_nothing_heavy_before_a_command_runs():
    light = ["pandas", "numpy", "sqlalchemy", "pydantic", "traderbot.core", "traderbot.config"] + HEAVY
    assert json.loads(_python("import traderbot.cli\n" + _loaded(light))) == []
    code = "import contextlib, io\nfrom traderbot.cli import main\nwith contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit): main(['--help'])\n"
    assert json.loads(_python(code + _loaded(light))) == []


def test_no_module_imports_a_heavy_library_it_needs_only_in_a_function():
    mods = [m for m in _modules() if m not in NEEDS_AT_IMPORT]
    assert "traderbot.daily" in mods and "traderbot.research.sweep" in mods
    assert json.loads(_python("".join(f"import {m}\n" for m in mods) + _loaded(HEAVY))) == []


def test_only_the_store_loads_sqlalchemy_at_import():
    owners = ("traderbot.store.", "traderbot.brokers.paper")
    mods = [m for m in _modules() if not m.startswith(owners)]
    assert "traderbot.daily" in mods and "traderbot.schedule" in mods and "traderbot.dashboard.portfolio" in mods
    code = ("import json, subprocess, sys\n"
            f"mods = {mods!r}\n"
            "probe = 'import sys, {m}; print(\"sqlalchemy\" in sys.modules)'\n"
            "print(json.dumps([m for m in mods if subprocess.run([sys.executable, '-c', probe.format(m=m)], capture_output=True, text=True, check=True).stdout.strip() != 'False']))")
    assert json.loads(_python(code)) == []
    # the stand-in does import the store at the first use, and is then the store's own module to its caller
    used = "import sys, traderbot.daily as d\nd.ledger.TRADING_STATES\nprint(sys.modules['traderbot.store.ledger'].TRADING_STATES == d.ledger.TRADING_STATES and 'sqlalchemy' in sys.modules)"
    assert _python(used) == "True"


def test_numba_caches_under_the_users_cache(tmp_path):
    from traderbot.core import kernels_stamp
    stamp = kernels_stamp()             # the kernels' sources: a change to any kernel module (or a callee's) starts a fresh cache
    code = "import traderbot.research.sweep, traderbot.research.rl.envs, numba, os; print(numba.config.CACHE_DIR + '|' + os.environ['NUMBA_CACHE_DIR'])"
    assert _python(code, XDG_CACHE_HOME=str(tmp_path), NUMBA_CACHE_DIR=None) == f"{tmp_path}/traderbot/numba/{stamp}|{tmp_path}/traderbot/numba/{stamp}"
    assert _python(code, XDG_CACHE_HOME=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "mine")) == f"{tmp_path}/mine|{tmp_path}/mine"
    home = _python("import traderbot.core, os; print(os.environ['NUMBA_CACHE_DIR'])", XDG_CACHE_HOME=None, NUMBA_CACHE_DIR=None)
    assert home == str(Path.home() / ".cache" / "traderbot" / "numba" / stamp)
    late = "import numba, traderbot.core; print(numba.config.CACHE_DIR)"   # numba imported first: traderbot still points it at its cache
    assert _python(late, XDG_CACHE_HOME=str(tmp_path), NUMBA_CACHE_DIR=None) == f"{tmp_path}/traderbot/numba/{stamp}"


def test_the_pipeline_runner_keeps_rfc3987_syntax_out(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell("x + 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "t.ipynb")
    code = (f"from pathlib import Path\nfrom traderbot.config import load_settings\nfrom traderbot.pipeline import check_parameters, pipeline_notebook, _export_html, _keep_out_rfc3987\n"
            f"check_parameters(pipeline_notebook(load_settings(env={{}}), 'daily'), {{}})\n"
            f"_keep_out_rfc3987(); import papermill as pm\n"
            f"pm.execute_notebook({str(tmp_path / 't.ipynb')!r}, {str(tmp_path / 'o.ipynb')!r}, kernel_name='python3', progress_bar=False)\n"
            f"_export_html(Path({str(tmp_path / 'o.ipynb')!r}))\n" + _loaded(["rfc3987_syntax", "jsonschema", "papermill", "nbconvert"]))
    assert json.loads(_python(code)) == ["jsonschema", "papermill", "nbconvert"]
    assert (tmp_path / "o.html").is_file()


def test_the_voila_launcher_keeps_rfc3987_syntax_out():
    from traderbot.dashboard.serve import dashboard_command
    cmd = dashboard_command("nbs/dashboards", port=8866)
    assert cmd[0] == sys.executable and cmd[1] == "-c" and "voila.app" in cmd[2]
    probe = cmd[2].replace("sys.exit(main())", _loaded(["rfc3987_syntax", "jsonschema", "voila.app"]).replace("import json, sys; ", "import json; "))
    assert probe != cmd[2]
    assert json.loads(_python(probe)) == ["jsonschema", "voila.app"]


def test_warmup_leaves_fresh_bytecode_for_every_module():
    import importlib.util, shutil
    exe = shutil.which("traderbot", path=str(Path(sys.executable).parent))
    gone = Path(importlib.util.cache_from_source(str(PKG / "research" / "montecarlo.py")))   # no warmup step imports it
    gone.unlink(missing_ok=True)                                        # so only warmup's own compile can bring it back
    r = subprocess.run([exe, "warmup"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0 and "bytecode of" in r.stdout and "up to date" in r.stdout, r.stdout + r.stderr
    stale = []
    for p in PKG.rglob("*.py"):
        pyc = Path(importlib.util.cache_from_source(str(p)))
        # a timestamp pyc's header: magic, flags, then the source's mtime and size (what the import system checks)
        head = pyc.read_bytes()[:16] if pyc.exists() else b""
        if len(head) < 16 or head[:4] != importlib.util.MAGIC_NUMBER or int.from_bytes(head[8:12], "little") != int(p.stat().st_mtime) & 0xFFFFFFFF:
            stale.append(str(p.relative_to(ROOT)))
    assert stale == []

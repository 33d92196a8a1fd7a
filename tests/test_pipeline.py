"""End-to-end: `traderbot run daily` through papermill on the embedded data with the paper broker.

Each test runs the real command in a subprocess against its own SQLite store and reports folder, so
the repository's data/ and reports/ are never touched.
"""
import os, shutil, sqlite3, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

from traderbot.brokers import paper
from traderbot.store import schema, ledger, database
from traderbot.store.runs import get_run, runs_frame
from traderbot.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
TRADERBOT = [str(Path(sys.executable).parent / "traderbot")]
CANARIES = {"ALPACA_API_KEY": "canary-key-7Qf3xZ", "ALPACA_SECRET_KEY": "canary-secret-9Lm2Wv"}


def environment(tmp_path):
    "Environment for a run with its own store and reports folder under `tmp_path`, plus its store URL."
    db = tmp_path / "traderbot.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADERBOT")}
    env.update(TRADERBOT_SETTINGS=str(ROOT / "settings.ini"), TRADERBOT__STORE__URL=f"sqlite:///{db}",
               TRADERBOT__PIPELINE__REPORTS_DIR=str(tmp_path / "reports"), PYTHONUNBUFFERED="1")
    return env, f"sqlite:///{db}", tmp_path


@pytest.fixture
def sandbox(tmp_path):
    "A fresh, empty store and reports folder."
    return environment(tmp_path)


@pytest.fixture(scope="module")
def traded_template(tmp_path_factory):
    "A store in which the daily pipeline has already traded 2022-12-27 (made once, copied per test)."
    env, url, tmp = environment(tmp_path_factory.mktemp("traded"))
    r = traderbot(env, "run", "daily", "-p", "as_of=2022-12-27")
    assert r.returncode == 0, r.stderr
    return tmp / "traderbot.db"


@pytest.fixture
def traded(tmp_path, traded_template):
    "A copy of the traded store, for a test to change."
    shutil.copy(traded_template, tmp_path / "traderbot.db")
    return environment(tmp_path)


def traderbot(env, *args, timeout=300):
    return subprocess.run([*TRADERBOT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def table_rows(url, table):
    eng = database.connect(url)
    with eng.connect() as con: return [dict(r._mapping) for r in con.execute({**schema.metadata.tables, **paper.metadata.tables}[table].select())]


def test_rerun_same_as_of_sends_nothing_twice(sandbox):
    env, url, tmp = sandbox
    first = traderbot(env, "run", "daily", "-p", "as_of=2022-12-28")
    assert first.returncode == 0, first.stderr
    orders = table_rows(url, "orders")
    assert len(orders) > 0 and all(o["status"] == "filled" for o in orders)
    second = traderbot(env, "run", "daily", "-p", "as_of=2022-12-28")
    assert second.returncode == 0, second.stderr
    assert "0 sent now" in second.stdout and "resumed" in second.stdout
    # exactly one order per intent, in the store and at the broker
    after = table_rows(url, "orders")
    assert [o["client_order_id"] for o in after] == [o["client_order_id"] for o in orders]
    broker_ids = [p["client_order_id"] for p in table_rows(url, "paper_orders")]
    assert sorted(broker_ids) == sorted(o["client_order_id"] for o in orders)
    assert len(table_rows(url, "paper_fills")) == len(table_rows(url, "fills")) == len(orders)
    # both runs recorded with lineage, and each left its notebook and HTML report
    eng = database.connect(url)
    runs = runs_frame(eng)
    assert list(runs.status) == ["succeeded", "succeeded"]
    for run in runs.itertuples():
        nb = Path(run.html_path).with_suffix(".ipynb")
        assert nb.exists() and Path(run.html_path).exists() and nb.parent == tmp / "reports" / "daily"
        assert len(run.data_hash) == 64 and run.git_commit
    assert all(o["run_id"] == runs.run_id.iloc[-1] and o["signal_id"] for o in orders)   # lineage: the first run
    assert "report:" in first.stdout and "equity" in first.stdout


def test_ledger_matches_the_paper_broker_after_a_run(traded):
    env, url, _ = traded
    from traderbot.brokers.paper import PaperBroker, market_at
    from traderbot.execution.manager import ledger_differences, reconcile
    eng = database.connect(url)
    acct = ledger.account_id(eng, "default")
    broker = PaperBroker(eng, "default", market_at({}, pd.Timestamp("2022-12-28 21:00", tz="UTC")))
    assert ledger_differences(eng, acct, broker) == {}
    paper_cash = table_rows(url, "paper_accounts")[0]["initial_cash"] + sum(f.cash_flow for f in broker.fills())
    assert paper_cash == ledger.account_cash(eng, acct)                      # cash agrees with the paper book too
    recs = table_rows(url, "reconciliations")
    assert [r["status"] for r in recs] == ["clean"]                         # the run reconciled before trading
    fills = table_rows(url, "fills")
    initial = table_rows(url, "accounts")[0]["initial_cash"]
    cash_flow = sum((-q if s == "buy" else q) * p - c for q, p, c, s in
                    ((f["quantity"], f["price"], f["commission"], f["side"]) for f in fills))
    assert ledger.account_cash(eng, acct) == initial + cash_flow


def test_failed_run_is_recorded_and_keeps_its_notebook(sandbox):
    env, url, tmp = sandbox
    r = traderbot(env, "run", "daily", "-p", "as_of=2022-12-26")   # Boxing Day holiday
    assert r.returncode == 1
    assert "2022-12-26 is not a XNYS trading session" in r.stderr
    run = runs_frame(database.connect(url)).iloc[0]
    assert run.status == "failed" and "2022-12-26" in run.error
    assert Path(run.html_path).exists() and Path(run.html_path).with_suffix(".ipynb").exists()
    assert table_rows(url, "orders") == [] and table_rows(url, "paper_orders") == []


def test_timed_out_run_is_recorded_as_failed(tmp_path):
    "A cell that runs past the cell timeout fails the run; its output notebook is kept."
    import nbformat
    from traderbot.pipeline import PipelineFailed, run_pipeline
    (tmp_path / "nbs" / "pipelines").mkdir(parents=True)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    params = nbformat.v4.new_code_cell('run_id: str = ""  # set by the runner\nsettings_path: str = ""  # set by the runner')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import time\ntime.sleep(60)")]
    nbformat.write(nb, tmp_path / "nbs" / "pipelines" / "sleepy.ipynb")
    (tmp_path / "settings.ini").write_text("[pipeline]\ncell_timeout_s = 3\n")
    cfg = load_settings(tmp_path / "settings.ini", env={})
    with pytest.raises(PipelineFailed, match="(?i)timeout|timed out") as e:
        run_pipeline(cfg, "sleepy")
    row = get_run(database.connect(cfg.store.url), e.value.run_id)
    assert row["status"] == "failed" and row["duration_s"] < 60
    assert e.value.notebook.exists()


def test_s2_canary_secrets_never_reach_notebooks_reports_logs_or_store(sandbox):
    env, url, tmp = sandbox
    env = {**env, **CANARIES}
    r = traderbot(env, "--debug", "run", "daily")
    assert r.returncode == 0, r.stderr
    places = {"stdout": r.stdout, "stderr": r.stderr}
    for f in (tmp / "reports").rglob("*"):
        if f.is_file(): places[str(f)] = f.read_text(errors="replace")
    places["store"] = Path(url.removeprefix("sqlite:///")).read_bytes().decode("latin-1")
    assert len(places) >= 4
    for where, text in places.items():
        for secret in CANARIES.values():
            assert secret not in text, f"secret leaked into {where}"
    from test_reliability import audit
    audit(url)


@pytest.mark.parametrize("override, named", [
    ({"TRADERBOT__RISK__MAX_POSITION_WEIGHT": "-1"}, "[risk] max_position_weight"),
    ({"TRADERBOT__TRADERBOT__MODE": '"false"'}, "[traderbot] mode"),
    ({"TRADERBOT__DATA__UNIVERSE": "AAPL';DROP TABLE orders;--"}, "AAPL';DROP TABLE orders;--"),
    ({"TRADERBOT__DATA__UNIVERSE": "AAPL ../x"}, "../x"),
])
def test_b11_b12_bad_settings_and_hostile_symbols_change_nothing(traded, override, named):
    env, url, _ = traded
    before = {t: table_rows(url, t) for t in ("orders", "fills", "positions", "pipeline_runs", "paper_orders")}
    r = traderbot({**env, **override}, "run", "daily", "-p", "as_of=2022-12-28")
    assert r.returncode == 1 and named in r.stderr, r.stderr
    assert {t: table_rows(url, t) for t in before} == before
    from test_reliability import audit
    audit(url)


def test_bad_bars_are_refused_naming_symbol_and_date(sandbox):
    env, url, tmp = sandbox
    data = tmp / "data"
    shutil.copytree(ROOT / "data" / "sample", data)
    px = pd.read_csv(data / "sp500_closes.csv.gz")
    px.loc[px.index[-3], "MSFT"] = float("nan")
    px.to_csv(data / "sp500_closes.csv.gz", index=False)
    r = traderbot({**env, "TRADERBOT__DATA__PATH": str(data)}, "run", "daily")
    assert r.returncode == 1
    assert "MSFT" in r.stderr and px.Date.iloc[-3] in r.stderr, r.stderr
    assert table_rows(url, "orders") == [] and table_rows(url, "paper_orders") == []
    assert runs_frame(database.connect(url)).status.tolist() == ["failed"]


def test_import_traderbot_is_light():
    code = ("import sys, traderbot, traderbot.core, traderbot.config, traderbot.data.calendar, traderbot.data.bars, traderbot.data.sample, "
            "traderbot.store.schema, traderbot.store.database, traderbot.store.runs, traderbot.store.ledger, traderbot.risk.gate, "
            "traderbot.risk.breakers, traderbot.risk.report, traderbot.execution.algos, traderbot.brokers.factory, traderbot.brokers.paper, "
            "traderbot.brokers.router, traderbot.dashboard.widgets, traderbot.dashboard.portfolio, traderbot.dashboard.serve, "
            "traderbot.execution.manager, traderbot.pipeline, traderbot.research.strategy, traderbot.research.backtest, traderbot.cli, traderbot.daily, "
            "traderbot.research.features, traderbot.research.stats, traderbot.research.models, traderbot.research.registry, traderbot.research.study, traderbot.portfolio.optimize, "
            "traderbot.portfolio.tax, traderbot.risk.measures, traderbot.risk.scenarios, traderbot.portfolio.sizing, traderbot.dashboard.risk\n"
            "heavy = [m for m in ('torch', 'transformers', 'vectorbt', 'stable_baselines3') if m in sys.modules]\n"
            "print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_backfill_runs_once_per_session_and_skips_the_holiday(sandbox):
    env, url, _ = sandbox
    r = traderbot(env, "run", "daily", "--from", "2022-12-22", "--to", "2022-12-28")
    assert r.returncode == 0, r.stderr
    eng = database.connect(url)
    runs = runs_frame(eng)
    assert len(runs) == 4 and set(runs.status) == {"succeeded"}
    curve = ledger.equity_curve(eng, "default")
    assert [d.strftime("%Y-%m-%d") for d in curve.index] == ["2022-12-22", "2022-12-23", "2022-12-27", "2022-12-28"]
    dates = {str(o["as_of"]) for o in table_rows(url, "orders")}
    assert "2022-12-26" not in dates and "2022-12-22" in dates
    # rerunning the latest session sends nothing new; a range that starts before it is refused (time moves forward)
    n_orders = len(table_rows(url, "paper_orders"))
    assert traderbot(env, "run", "daily", "--from", "2022-12-28", "--to", "2022-12-28").returncode == 0
    assert len(table_rows(url, "paper_orders")) == n_orders
    again = traderbot(env, "run", "daily", "--from", "2022-12-27", "--to", "2022-12-28")
    assert again.returncode == 1 and "last run for 2022-12-28; a run for 2022-12-27" in again.stderr, again.stderr
    assert len(table_rows(url, "paper_orders")) == n_orders


def test_train_pipeline_reports_out_of_sample_numbers_and_registers_a_candidate(sandbox):
    """`traderbot run train` (a small line-up): report written, every variant counted as a trial, the candidate registered with its
    out-of-sample metrics, and `traderbot models promote` refusing it by settings.ini's bars when they are not met."""
    env, url, tmp = sandbox
    env = {**env, "TRADERBOT__MODELS__ARTEFACT_DIR": str(tmp / "models")}
    r = traderbot(env, "run", "train", "-p", "models=baseline", "-p", "start=2012-01-01", "-p", "min_train=1750", "-p", "candidate=baseline", timeout=600)
    assert r.returncode == 0, r.stderr
    html = next((tmp / "reports" / "train").glob("*.html")).read_text()
    assert "accuracy_pvalue" in html and "deflated_sharpe" in html and "registered direction" in html
    eng = database.connect(url)
    trials = table_rows(url, "trials")
    assert len(trials) == 6 and {t["study"] for t in trials} == {"daily-direction"}      # 1 model x 3 top_k x 2 thresholds
    (v,) = table_rows(url, "model_versions")
    assert v["status"] == "candidate" and v["kind"] == "baseline" and Path(v["artefact_path"]).is_dir()
    assert 0.4 < v["metrics"]["accuracy"] < 0.7 and v["metrics"]["trials"] == 6
    from traderbot.research.registry import promotion_problems
    problems = promotion_problems(v["metrics"], load_settings(env=env).models)
    assert problems, v["metrics"]            # the baseline has no edge on the sample (README): its DSR is below the 0.95 bar
    r = traderbot(env, "models", "promote", "direction", v["version"][:10])
    assert r.returncode == 1 and problems[0] in r.stderr, r.stderr
    assert table_rows(url, "model_versions")[0]["status"] == "candidate"
    runs = runs_frame(eng)
    assert runs.pipeline.tolist() == ["train"] and runs.status.tolist() == ["succeeded"]


def test_daily_run_trades_on_a_promoted_model_and_stores_why(sandbox):
    """With a promoted model the daily pipeline picks by its P(up) and each signal's rationale names the model version, its
    P(up) and the features behind it. (The model's metrics are written here to exercise promotion; real ones come from a study.)"""
    from traderbot.data.sample import load_benchmark, load_closes
    from traderbot.research.features import align, feature_panel, labels
    from traderbot.research.models import Baseline
    from traderbot.research.registry import promote, register_model
    env, url, tmp = sandbox
    env = {**env, "TRADERBOT__MODELS__ARTEFACT_DIR": str(tmp / "models")}
    cfg = load_settings(env=env)
    eng = database.open_store(url)
    px = load_closes().loc[:"2021-12-31"]
    panel, lab = align(feature_panel(px, load_benchmark(end="2021-12-31")), labels(px, 5))
    v = register_model(eng, cfg, Baseline().fit(panel, lab["direction"], panel.index), "direction", "baseline", list(panel.columns),
                       "2012-01-03", "2021-12-22", {"accuracy_pvalue": 0.01, "deflated_sharpe": 0.99, "pbo": 0.1})
    promote(eng, cfg, "direction", v.version, "operator:test")
    r = traderbot(env, "run", "daily", "-p", "as_of=2022-12-28")
    assert r.returncode == 0, r.stderr
    html = next((tmp / "reports" / "daily").glob("*.html")).read_text()
    assert f"picks from model direction {v.version[:12]}" in html
    sig = table_rows(url, "signals")
    assert sig and all(f"model direction {v.version[:12]}: P(up)" in s["rationale"] and "top features" in s["rationale"] for s in sig)
    assert all(float(s["rationale"].split("P(up) ")[1].split(";")[0]) > cfg.models.min_probability for s in sig)

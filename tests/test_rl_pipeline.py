"""`traderbot run train_rl` end to end (papermill, a subprocess) with a tiny budget: the report states the verdict, the
spread over seeds, every variant and baseline, the alarms and the ensemble's picks; every variant is a trial of the
study; the candidate is registered with its seed, library versions, data hash and [rl] settings; promotion applies
the models' bars to it.
"""
import json
from pathlib import Path

from traderbot.config import load_settings
from traderbot.research.registry import promotion_problems

from test_pipeline import environment, table_rows, traderbot

TINY = {"TRADERBOT__RL__TIMESTEPS": "300", "TRADERBOT__RL__SEEDS": "2", "TRADERBOT__RL__N_STEPS": "128", "TRADERBOT__RL__BATCH_SIZE": "32",
        "TRADERBOT__RL__EPISODE_LENGTH": "100", "TRADERBOT__RL__CONFIGS": "dqn-single ppo-portfolio"}


def test_train_rl_reports_agents_against_the_alternatives_and_registers_a_candidate(tmp_path):
    env, url, tmp = environment(tmp_path)
    env = {**env, **TINY, "TRADERBOT__MODELS__ARTEFACT_DIR": str(tmp / "models"),
           "TRADERBOT__PIPELINE__CELL_TIMEOUT_S": "5"}   # the training cell runs far longer: only [pipeline] training_cell_timeout_s lets it finish
    r = traderbot(env, "run", "train_rl", "-p", "start=2020-01-01", "-p", "min_train=400", "-p", "test_size=126", "-p", "forecaster=baseline", timeout=900)
    assert r.returncode == 0, r.stderr
    html = next((tmp / "reports" / "train_rl").glob("*.html")).read_text()
    for text in ("median Sharpe", "buy &amp; hold equal weight", "buy &amp; hold AAPL", "random (single)", "momentum strategy", "forecaster (baseline)",
                 "ensemble (validation pick)", "dqn-single seed1", "ppo-portfolio seed0", "PBO over the 4 variants", "registered agent"):
        assert text in html, text
    assert "beats buy-and-hold" in html or "beat buy-and-hold" in html
    trials = table_rows(url, "trials")
    assert sorted(t["name"] for t in trials) == ["dqn-single seed0", "dqn-single seed1", "ppo-portfolio seed0", "ppo-portfolio seed1"]
    assert {t["study"] for t in trials} == {"rl-agents"}
    (v,) = table_rows(url, "model_versions")
    assert (v["name"], v["kind"], v["status"]) == ("agent", "ppo-portfolio", "candidate")
    p = v["parameters"]
    assert p["seed"] == 0 and p["versions"]["stable_baselines3"] == "2.9.2" and len(p["data_hash"]) == 64 and p["rl"]["timesteps"] == 300
    assert v["metrics"]["seeds"] == 2 and v["metrics"]["n_trials"] == 4 and 0 <= v["metrics"]["pbo"] <= 1
    cfg = json.loads((Path(v["artefact_path"]) / "config.json").read_text())
    assert cfg["class"] == "RLAgent" and cfg["spec"]["config"] == "ppo-portfolio" and (Path(v["artefact_path"]) / "policy.pt").exists()
    problems = promotion_problems(v["metrics"], load_settings(env=env).models)
    r = traderbot(env, "models", "promote", "agent", v["version"][:10])
    assert (r.returncode == 1 and problems[0] in r.stderr) if problems else r.returncode == 0, r.stderr


def test_a_promoted_agent_drives_the_daily_run_through_the_gate_and_says_why(tmp_path):
    """[rl] use = true with a promoted portfolio agent: `traderbot run daily` trades the agent's target weights (each name
    capped as the strategy caps it), every signal's rationale names the agent, its version, configuration, seed and the
    symbol's action value, and the orders went through the same gate (none above the position limit)."""
    from dataclasses import replace
    from traderbot.data.sample import load_benchmark, load_closes
    from traderbot.research.registry import promote, register_model
    from traderbot.research.rl.agents import AgentSpec, train_agent
    from traderbot.research.rl.envs import market_arrays
    from traderbot.store import database
    env, url, tmp = environment(tmp_path)
    env = {**env, **TINY, "TRADERBOT__MODELS__ARTEFACT_DIR": str(tmp / "models"), "TRADERBOT__RL__USE": "true"}
    cfg = load_settings(env=env)
    px, ix = load_closes().loc[:"2022-12-28"], load_benchmark().loc[:"2022-12-28"]
    data = market_arrays(px, ix)
    spec = replace(AgentSpec.from_settings(cfg, "ppo-portfolio", data.symbols), timesteps=300)
    agent = train_agent(spec, data, "2018-01-02", "2021-12-30", cfg.cost_model(), seed=3)
    eng = database.open_store(url)
    v = register_model(eng, cfg, agent, "agent", "ppo-portfolio", agent.features, "2018-01-02", "2021-12-30",
                       {"accuracy_pvalue": 0.01, "deflated_sharpe": 0.99, "pbo": 0.1})   # written here to exercise promotion; real ones come from train_rl
    promote(eng, cfg, "agent", v.version, "operator:test")
    r = traderbot(env, "run", "daily", "-p", "as_of=2022-12-28")
    assert r.returncode == 0, r.stderr
    html = next((tmp / "reports" / "daily").glob("*.html")).read_text()
    assert f"picks from agent agent {v.version[:12]}" in html
    sig = table_rows(url, "signals")
    assert sig and all(f"agent agent {v.version[:12]} (ppo-portfolio, seed 3): action value" in s["rationale"] for s in sig), sig[:1]
    cut = market_arrays(px, ix)
    _, _, target = agent.decide(cut, {})
    want = target[target.abs() > 1e-12]
    assert {s["symbol"] for s in sig} == set(want.index)
    assert all(float(s["rationale"].split("target weight ")[1].rstrip("%")) == round(100 * want[s["symbol"]], 1) for s in sig)
    assert max(want) <= cfg.strategy.max_weight + 1e-12

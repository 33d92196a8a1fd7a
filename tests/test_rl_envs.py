"""The RL environments' contract (traderbot.research.rl.envs), checked end to end:

- gymnasium's and stable-baselines3's env checkers accept both environments;
- no look-ahead: changing every close after a session t leaves the observations up to t unchanged;
- parity to the cent: the environments' equity equals `run_backtest`'s `pf.value()` on every fill session
  (random actions with long-short flips and full-weight longs, so buys are partially filled), and the final cash and
  shares agree; `execute_targets` matches vectorbt on random batched rows;
- perfect foresight is learnable: PPO beats buy-and-hold out of sample by a wide, measured margin;
- bad input is refused with a one-line error naming what is wrong;
- the accounting kernels compile on first use: importing the module does not import numba, and the compiled
  `execute_targets` books exactly what vectorbt books (the parity tests above run it).
"""
from __future__ import annotations
import math, subprocess, sys

import numpy as np
import pandas as pd
import pytest

from traderbot.core import ConfigError, CostModel, DataError
from traderbot.data.sample import load_benchmark, load_closes
from traderbot.research.backtest import run_backtest
from traderbot.research.rl.envs import PortfolioEnv, SingleAssetEnv, execute_targets, market_arrays


@pytest.fixture(scope="module")
def closes():
    return load_closes()


@pytest.fixture(scope="module")
def data(closes):
    return market_arrays(closes, load_benchmark())


def run_episode(env, actions):
    "Step `env` with `actions` until the episode ends: targets by signal session, equity by fill session."
    env.reset()
    targets, equity = {}, {}
    for a in actions:
        signal = env.data.sessions[env.t]
        _, _, term, trunc, info = env.step(a)
        assert info["session"] == signal and info["fill_session"] == env.data.sessions[env.t]
        targets[signal], equity[info["fill_session"]] = info["target"], info["equity"]
        if term or trunc: break
    return targets, equity


@pytest.mark.filterwarnings("ignore:.*Box observation space m:UserWarning")   # features are unbounded by design
def test_env_checkers_accept_both_envs(data):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    makers = [lambda: SingleAssetEnv(data, "KO", "2012-01-03", "2012-12-31", episode_length=50),
              lambda: SingleAssetEnv(data, "KO", "2012-01-03", "2012-12-31", reward="differential_sharpe", perfect_foresight=True),
              lambda: PortfolioEnv(data, ["KO", "PEP", "PG"], "2012-01-03", "2012-12-31", episode_length=50, reward="drawdown")]
    for make in makers:
        check_env(make(), skip_render_check=True)
        sb3_check_env(make(), warn=False)


@pytest.mark.parametrize("kind", ["single", "portfolio"])
def test_observations_never_see_later_closes(closes, kind):
    cl = closes.loc["2014-01-01":"2016-12-31", ["AAPL", "JPM", "XOM"]]
    bench = load_benchmark().reindex(cl.index)
    t = cl.index.get_loc(pd.Timestamp("2016-03-01", tz="UTC"))
    future = cl.copy()
    future.iloc[t + 1:] *= np.random.default_rng(0).uniform(0.8, 1.25, future.iloc[t + 1:].shape)
    rng = np.random.default_rng(1)
    actions = rng.integers(0, 3, 400) if kind == "single" else rng.uniform(-1, 1, (400, 4))

    def observations(c):
        d = market_arrays(c, bench, features=["ret_1", "ret_21", "rsi_14", "macd_hist", "beta_252"])
        env = SingleAssetEnv(d, "JPM", start=260) if kind == "single" else PortfolioEnv(d, start=260)
        obs, _ = env.reset()
        out = [obs]
        for a in actions:
            obs, _, term, trunc, _ = env.step(a)
            out.append(obs)
            if term or trunc: break
        return np.array(out)

    real, changed = observations(cl), observations(future)
    k = t - 260                                     # the observation made at session t
    np.testing.assert_array_equal(real[:k + 1], changed[:k + 1])
    assert not np.array_equal(real[k + 1], changed[k + 1])


def test_execute_targets_matches_vectorbt_row_by_row():
    import vectorbt as vbt
    rng = np.random.default_rng(11)
    B, N, fees, slip = 24, 5, 0.002, 0.001
    px0 = rng.uniform(10, 200, (B, N)); pos0 = rng.uniform(-50, 100, (B, N)) * (rng.random((B, N)) < 0.7)
    cash0 = rng.uniform(0, 20_000, B) + np.maximum(0.0, -(pos0 * px0).sum(axis=1))   # a positive starting value
    cash0[1] = 0.0; pos0[1] = [10, 0, 5, 0, 0]                                          # no cash at all
    targets = rng.uniform(-0.8, 1.2, (B, N)) * (rng.random((B, N)) < 0.8)
    targets[::4] = 1.0 / N                                     # fully invested: partial buys
    px1 = px0 * rng.uniform(0.9, 1.1, (B, N)); px1[::5, 0] = np.nan   # a column without a price: ignored
    cash, pos, fees_paid, notional = execute_targets(cash0, pos0, px1, targets, fees, slip, val_prices=np.where(np.isnan(px1), px0, px1))
    for b in range(B):
        close = pd.DataFrame([px0[b], px1[b]])
        size = pd.DataFrame([pos0[b], targets[b]])
        st = np.array([[0] * N, [5] * N])                       # SizeType.Amount, then TargetPercent
        init = cash0[b] + float(np.dot(pos0[b], px0[b]))
        # row 0 builds the state with costless orders; shorts first so the longs never run out of cash
        pf = vbt.Portfolio.from_orders(close=close, size=size, size_type=st, fees=np.array([[0.0], [fees]]),
                                       slippage=np.array([[0.0], [slip]]), group_by=True, cash_sharing=True,
                                       call_seq="auto", init_cash=init, freq="1D")
        assert abs(pf.cash().iloc[-1] - cash[b]) < 1e-6
        np.testing.assert_allclose(pf.assets().iloc[-1].to_numpy(), pos[b], rtol=1e-12, atol=1e-9)
        rec = pf.orders.records
        row1 = rec[rec["idx"] == 1]
        assert abs(row1["fees"].sum() - fees_paid[b]) < 1e-6
        assert abs((row1["size"] * row1["price"]).sum() - notional[b]) < 1e-6


def check_parity(env, actions, closes, cost):
    targets, equity = run_episode(env, actions)
    symbols = env.symbols if isinstance(env, PortfolioEnv) else [env.symbol]
    cl = closes[symbols].loc[env.data.sessions[env.start]:env.data.sessions[env.end]]
    pf = run_backtest(cl, pd.DataFrame(targets, index=symbols).T, cost, env.init_cash, lag=1)
    eq = pd.Series(equity)
    gap = (pf.value().reindex(eq.index) - eq).abs().max()
    assert gap < 1e-6, gap
    assert abs(pf.cash().iloc[-1] - env.cash[0]) < 1e-6
    np.testing.assert_allclose(pf.assets().loc[eq.index[-1]].to_numpy(), env.position[0], rtol=1e-12, atol=1e-9)
    return pf


def test_single_asset_env_equals_run_backtest_to_the_cent(data, closes):
    cost = CostModel(fees=0.001, slippage=0.0005)
    env = SingleAssetEnv(data, "AMD", "2008-01-02", "2009-12-31", cost=cost, max_position=1.0)
    pf = check_parity(env, np.random.default_rng(7).integers(0, 3, 600), closes, cost)
    assert (pf.cash() == 0).sum() > 50              # full longs: the buy was filled partially with all the cash
    assert (pf.assets()["AMD"] < 0).sum() > 50      # and shorts
    assert len(pf.orders.records) > 200             # flips long <-> short


def test_short_max_position_env_equals_run_backtest(data, closes):
    cost = CostModel(fees=0.0005, slippage=0.0005)
    env = SingleAssetEnv(data, "GE", "2007-01-03", "2010-12-31", cost=cost, max_position=0.6, reward="drawdown")
    check_parity(env, np.random.default_rng(8).integers(0, 3, 2000), closes, cost)


def test_portfolio_env_equals_run_backtest_to_the_cent(data, closes):
    cost = CostModel(fees=0.001, slippage=0.0005)
    env = PortfolioEnv(data, ["AAPL", "AMD", "JPM", "XOM", "KO"], "2008-01-02", "2010-12-31", cost=cost, max_weight=1.0)
    pf = check_parity(env, np.random.default_rng(9).uniform(-1, 1, (1000, 6)), closes, cost)
    assert (pf.cash() == 0).sum() > 0               # some rows ask for 100%: partial buys


def test_portfolio_env_parity_with_listings_and_delistings(closes):
    "A symbol listed mid-episode and one that stops trading while held: valued at its last close, as vectorbt does."
    cl = closes[["AMD", "JPM", "KO"]].loc["2008-01-02":"2009-12-31"].copy()
    cl.loc[:"2008-06-01", "AMD"] = np.nan
    cl.loc["2009-06-30":, "JPM"] = np.nan
    d = market_arrays(cl, features=["ret_1", "ret_5"])
    cost = CostModel(fees=0.001, slippage=0.0005)
    env = PortfolioEnv(d, start=0, cost=cost, max_weight=0.6)
    targets, equity = run_episode(env, np.random.default_rng(10).uniform(-1, 1, (600, 4)))
    w = pd.DataFrame(targets, index=env.symbols).T
    assert (w.loc[:"2008-06-05", "AMD"] == 0).all() and (w.loc["2009-06-29":, "JPM"] == 0).all()
    pf = run_backtest(cl, w, cost, env.init_cash, lag=1)
    eq = pd.Series(equity)
    assert (pf.value().reindex(eq.index) - eq).abs().max() < 1e-6
    assert pf.assets().loc["2009-07-01":, "JPM"].iloc[0] != 0      # still held after its last close


def test_perfect_foresight_is_learnable(closes):
    import torch
    from stable_baselines3 import PPO
    torch.set_num_threads(1)
    ko = market_arrays(closes[["KO"]], features=["ret_1", "ret_5"])
    train = SingleAssetEnv(ko, "KO", "2000-01-03", "2015-12-31", episode_length=256, perfect_foresight=True)
    model = PPO("MlpPolicy", train, seed=0, n_steps=1024, batch_size=256, verbose=0).learn(4096)
    oos = SingleAssetEnv(ko, "KO", "2016-01-04", "2022-12-28", perfect_foresight=True)
    obs, _ = oos.reset()
    total, done = 0.0, False
    while not done:
        obs, r, done, _, info = oos.step(model.predict(obs, deterministic=True)[0])
        total += r
    hold = math.log(closes["KO"].iloc[oos.end] / closes["KO"].iloc[oos.start + 1])
    assert abs(total - math.log(info["marked_value"] / 1e6)) < 1e-9       # rewards telescope to the episode's log return
    # measured: total about 12.1, buy-and-hold about 0.63 (seed 0)
    assert total > 5 and total > 8 * hold, (total, hold)


@pytest.mark.parametrize("make, error, text", [
    (lambda d: SingleAssetEnv(d, "ZZZZ"), ConfigError, "symbol 'ZZZZ'"),
    (lambda d: PortfolioEnv(d, ["KO", "ZZZZ"]), ConfigError, "symbol 'ZZZZ'"),
    (lambda d: SingleAssetEnv(d, "KO", reward="sharpe"), ConfigError, "reward='sharpe'"),
    (lambda d: PortfolioEnv(d, reward="pnl"), ConfigError, "reward='pnl'"),
    (lambda d: SingleAssetEnv(d, "KO", start="2015-01-01", end="2014-01-01"), ConfigError, "is after end"),
    (lambda d: PortfolioEnv(d, start="2015-01-01", end="2014-01-01"), ConfigError, "is after end"),
    (lambda d: SingleAssetEnv(d, "KO", start="2015-01-02", end="2015-01-05"), ConfigError, "needs 3"),
    (lambda d: PortfolioEnv(d, start="2015-01-02", end="2015-02-27", episode_length=60), ConfigError, "needs 62"),
    (lambda d: SingleAssetEnv(d, "KO", start="1990-01-02", end="1992-01-02"), DataError, "KO: no features on 1990-01-02"),
    (lambda d: SingleAssetEnv(d, "KO", start="2030-01-01"), ConfigError, "outside the data"),
    (lambda d: SingleAssetEnv(d, "KO", max_position=-1), ConfigError, "max_position=-1"),
    (lambda d: PortfolioEnv(d, max_weight=0), ConfigError, "max_weight=0"),
    (lambda d: SingleAssetEnv(d, "KO", init_cash=0), ConfigError, "init_cash=0"),
    (lambda d: SingleAssetEnv(d, "KO").step(5), ConfigError, "action 5"),
    (lambda d: PortfolioEnv(d, ["KO", "PEP"]).step(np.zeros(4)), ConfigError, "expected 3 finite numbers"),
])
def test_bad_input_is_named(data, make, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(")):
        make(data)


def test_importing_the_envs_does_not_import_numba():
    "numba (0.4 s to import) loads on the first step, not when the daily run imports the registry, agents and envs."
    code = "import sys, traderbot.research.rl.envs, traderbot.research.registry; print('numba' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_broke_episode_ends_at_the_floor(data):
    "A short squeezed far enough ends the episode at 1% of the starting cash; the reward uses the floor, never log(<0)."
    env = SingleAssetEnv(data, "AMD", "2016-01-04", "2017-12-29", max_position=40.0, cost=CostModel(fees=0.0, slippage=0.0))
    env.reset()
    total, done, info = 0.0, False, {}
    while not done:
        _, r, done, trunc, info = env.step(0)                                     # 40x short AMD through its 2016 rally
        total += r
    assert info["marked_value"] <= 0.01 * env.init_cash and env.t + 2 <= env.end   # broke, before the window's end
    assert math.isfinite(total) and abs(total - math.log(0.01)) < 1e-9             # the rewards telescope to log(floor / cash)

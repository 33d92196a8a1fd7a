"""`BatchedEnv` (traderbot.research.rl.vec) against SB3's own `DummyVecEnv`, and under PPO and DQN:

- the same episodes: B sub-environments and `DummyVecEnv` of B single environments, built from the same arguments and
  seeded the same way, give the same observations, rewards, dones and infos (terminal observations, equity, weights,
  truncation) for thousands of random steps with resets, for both environments;
- PPO and DQN train on it;
- bad input is refused with one line naming it.
"""
from __future__ import annotations

import numpy as np
import pytest

from traderbot.core import ConfigError, CostModel
from traderbot.data.sample import load_benchmark, load_closes
from traderbot.research.rl.envs import PortfolioEnv, SingleAssetEnv, market_arrays
from traderbot.research.rl.vec import BatchedEnv


@pytest.fixture(scope="module")
def data():
    return market_arrays(load_closes(), load_benchmark())


def assert_same_as_dummy(make, n, steps, actions, seed):
    "Step BatchedEnv(n) and DummyVecEnv([make] * n) with the same random actions; the number of episodes that ended."
    from stable_baselines3.common.vec_env import DummyVecEnv
    ours, peer = BatchedEnv(make, n), DummyVecEnv([make] * n)
    assert ours.seed(seed) == peer.seed(seed)
    np.testing.assert_allclose(ours.reset(), peer.reset(), rtol=0, atol=1e-9)
    assert [i["session"] for i in ours.reset_infos] == [i["session"] for i in peer.reset_infos]
    rng, ended, truncated = np.random.default_rng(seed), 0, 0
    for _ in range(steps):
        a = actions(rng)
        o1, r1, d1, i1 = ours.step(a)
        o2, r2, d2, i2 = peer.step(a)
        assert o1.dtype == o2.dtype and r1.dtype == r2.dtype and d1.dtype == d2.dtype
        np.testing.assert_allclose(o1, o2, rtol=0, atol=1e-9)
        np.testing.assert_allclose(r1, r2, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(d1, d2)
        for x, y in zip(i1, i2):
            assert set(x) == set(y)
            assert (x["session"], x["fill_session"], x["TimeLimit.truncated"]) == (y["session"], y["fill_session"], y["TimeLimit.truncated"])
            for k in ("equity", "marked_value", "fees_paid"): assert abs(x[k] - y[k]) <= 1e-9 * max(1.0, abs(y[k])), k
            for k in ("weights", "target"): np.testing.assert_allclose(x[k], y[k], rtol=0, atol=1e-9)
            if "terminal_observation" in x:
                np.testing.assert_allclose(x["terminal_observation"], y["terminal_observation"], rtol=0, atol=1e-9)
        ended += int(d1.sum()); truncated += sum(i["TimeLimit.truncated"] for i in i1)
    return ended, truncated


COST = CostModel(fees=0.001, slippage=0.0005)


@pytest.mark.parametrize("reward", ["log_equity", "drawdown"])
def test_single_asset_batched_equals_dummy_vec_env(data, reward):
    make = lambda: SingleAssetEnv(data, "AMD", "2008-01-02", "2008-04-30", cost=COST, reward=reward, episode_length=50)
    ended, truncated = assert_same_as_dummy(make, 4, 3000, lambda r: r.integers(0, 3, 4), seed=1)
    assert ended > 200 and 0 < truncated < ended          # episodes end both by the time limit and at the window's end


@pytest.mark.parametrize("reward", ["log_equity", "differential_sharpe"])
def test_portfolio_batched_equals_dummy_vec_env(data, reward):
    make = lambda: PortfolioEnv(data, ["AAPL", "AMD", "JPM", "KO", "XOM"], "2008-01-02", "2008-04-30", cost=COST,
                                max_weight=0.6, reward=reward, episode_length=40)
    ended, truncated = assert_same_as_dummy(make, 3, 2000, lambda r: r.uniform(-1, 1, (3, 6)), seed=2)
    assert ended > 120 and 0 < truncated < ended


def test_whole_window_episodes_batched_equal_dummy(data):
    "No episode_length: every sub-environment plays start..end, ending together (terminated, never truncated)."
    make = lambda: PortfolioEnv(data, None, "2010-01-04", "2010-06-30", cost=COST)   # all 20 symbols
    ended, truncated = assert_same_as_dummy(make, 2, 400, lambda r: r.uniform(-1, 1, (2, 21)), seed=3)
    assert ended >= 6 and truncated == 0


def test_ppo_and_dqn_train_on_it(data):
    import torch
    from stable_baselines3 import DQN, PPO
    torch.set_num_threads(1)
    make = lambda n: BatchedEnv(SingleAssetEnv, n, data, "KO", "2005-01-03", "2012-12-31", episode_length=64)
    ppo = PPO("MlpPolicy", make(8), n_steps=32, batch_size=64, n_epochs=2, seed=0, verbose=0)
    before = [p.detach().clone() for p in ppo.policy.parameters()]
    ppo.learn(512)
    assert ppo.num_timesteps == 512
    assert any(not torch.equal(a, b) for a, b in zip(before, ppo.policy.parameters()))
    port = BatchedEnv(PortfolioEnv, 4, data, ["KO", "PEP", "XOM"], "2005-01-03", "2012-12-31", episode_length=64)
    assert PPO("MlpPolicy", port, n_steps=32, batch_size=64, n_epochs=1, seed=0, verbose=0).learn(256).num_timesteps == 256
    assert DQN("MlpPolicy", make(4), learning_starts=64, buffer_size=1000, seed=0, verbose=0).learn(400).num_timesteps == 400


def test_seeded_starts_repeat_and_differ_between_sub_envs(data):
    venv = BatchedEnv(SingleAssetEnv, 6, data, "KO", "2005-01-03", "2012-12-31", episode_length=20)
    starts = []
    for _ in range(2):
        venv.seed(7); venv.reset(); starts.append(venv.t.copy())
    np.testing.assert_array_equal(*starts)
    assert len(set(starts[0].tolist())) == 6


@pytest.mark.parametrize("make, text", [
    (lambda d: BatchedEnv(SingleAssetEnv, 0, d, "KO"), "n_envs=0"),
    (lambda d: BatchedEnv(SingleAssetEnv, 2.5, d, "KO"), "n_envs=2.5"),
    (lambda d: BatchedEnv(lambda: object(), 2), "got object"),
    (lambda d: BatchedEnv(SingleAssetEnv, 2, d, "ZZZZ"), "symbol 'ZZZZ'"),
    (lambda d: BatchedEnv(SingleAssetEnv, 2, d, "KO").step(np.array([1, 3])), "action 3"),
    (lambda d: BatchedEnv(PortfolioEnv, 2, d, ["KO", "PEP"]).step(np.zeros((2, 4))), "expected 3 finite numbers"),
    (lambda d: BatchedEnv(SingleAssetEnv, 2, d, "KO").set_attr("max_position", 0.5, indices=[1]), "share one configuration"),
])
def test_bad_input_is_named(data, make, text):
    with pytest.raises(ConfigError, match=text):
        make(data)

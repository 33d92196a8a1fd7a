"""`make bench`: reinforcement-learning speed on the embedded sample, each beside a peer in the same run.

- Environment steps per second of `SingleAssetEnv` (XOM) and `PortfolioEnv` (all 20 symbols), `episode_length=256`,
  random actions, resets included: one environment's `step`, SB3's `DummyVecEnv` of 4 and traderbot's `BatchedEnv` of
  64 (both per sub-environment step). Goal (issue 14): `BatchedEnv` >= 2x `DummyVecEnv` per sub-environment step.
- PPO training steps per second (collecting and learning) on `SingleAssetEnv` beside PPO on gymnasium's `CartPole-v1`,
  with the same hyperparameters (MlpPolicy, n_steps, batch_size, n_epochs, seed) and one torch thread. Goal (issue 14):
  PPO on the trading environment at >= 0.95x CartPole's speed. Each is timed `--repeats` times, alternating; the best
  run of each counts (the least disturbed by the rest of the machine).
CPU only. Numbers are what this machine measured on this run.
"""
from __future__ import annotations
import argparse, os, sys, time

import numpy as np

BATCH_GOAL, PPO_GOAL = 2.0, 0.95   # issue 14


def env_rate(env, actions) -> float:
    "Steps per second of one environment over `actions`, resetting when an episode ends."
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in actions:
        _, _, term, trunc, _ = env.step(a)
        if term or trunc: env.reset()
    return len(actions) / (time.perf_counter() - t0)


def vec_rate(venv, actions) -> float:
    "Sub-environment steps per second of a VecEnv over `actions` (one (n, ...) array per step); it resets itself."
    venv.seed(0); venv.reset()
    t0 = time.perf_counter()
    for a in actions: venv.step(a)
    return len(actions) * venv.num_envs / (time.perf_counter() - t0)


def env_rows(data, seconds: float) -> list[tuple]:
    "(environment, runner, sub-envs, steps/s) for both environments and the three runners."
    from stable_baselines3.common.vec_env import DummyVecEnv
    from traderbot.research.rl.envs import PortfolioEnv, SingleAssetEnv
    from traderbot.research.rl.vec import BatchedEnv
    kinds = {"SingleAssetEnv (XOM)": (lambda: SingleAssetEnv(data, "XOM", episode_length=256), lambda r, n: r.integers(0, 3, n)),
             f"PortfolioEnv ({len(data.symbols)} symbols)": (lambda: PortfolioEnv(data, episode_length=256),
                                                               lambda r, n: r.uniform(-1, 1, (n, len(data.symbols) + 1)).astype(np.float32))}
    rows = []
    for name, (make, act) in kinds.items():
        rng = np.random.default_rng(0)
        env = make()
        env_rate(env, [act(rng, 1)[0] for _ in range(200)])                           # warm-up: compile, caches
        probe = env_rate(env, [act(rng, 1)[0] for _ in range(500)])                   # size each run to about `seconds`
        steps = max(500, int(probe * seconds))
        rows.append((name, "env.step", 1, env_rate(env, [act(rng, 1)[0] for _ in range(steps)])))
        for runner, n in ((lambda: DummyVecEnv([make] * 4), 4), (lambda: BatchedEnv(make, 64), 64)):
            venv = runner()
            vec_rate(venv, [act(rng, n) for _ in range(20)])
            rows.append((name, type(venv).__name__, n, vec_rate(venv, [act(rng, n) for _ in range(max(50, steps // n))])))
    return rows


def ppo_rate(make_env, timesteps: int, hp: dict) -> float:
    "PPO training steps per second (rollouts and updates) over `timesteps`, model construction excluded."
    from stable_baselines3 import PPO
    model = PPO("MlpPolicy", make_env(), device="cpu", verbose=0, **hp)
    t0 = time.perf_counter()
    model.learn(timesteps)
    return timesteps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="about how long each environment measurement runs")
    ap.add_argument("--ppo-steps", type=int, default=4096, help="PPO timesteps per timed run")
    ap.add_argument("--repeats", type=int, default=3, help="timed PPO runs of each environment (the best counts)")
    args = ap.parse_args(argv)
    import gymnasium, torch
    torch.set_num_threads(1)
    from traderbot.data.sample import load_benchmark, load_closes
    from traderbot.research.rl.envs import SingleAssetEnv, market_arrays
    closes = load_closes()
    data = market_arrays(closes, load_benchmark())
    rows = env_rows(data, args.seconds)
    print(f"RL environment speed, {time.strftime('%Y-%m-%d %H:%M')} on this machine ({os.cpu_count()} cores), the embedded sample: "
          f"{len(data.sessions)} sessions, {len(data.symbols)} symbols, {len(data.feature_names)} features; episode_length 256, random actions")
    print(f"{'environment':26s} {'runner':14s} {'sub-envs':>8s} {'steps/s per sub-env':>20s} {'µs/step':>9s} {'vs DummyVecEnv':>15s}")
    base = {r[0]: r[3] for r in rows if r[1] == "DummyVecEnv"}
    for name, runner, n, rate in rows:
        vs = f"{rate / base[name]:.2f}x" if runner != "DummyVecEnv" else ""
        print(f"{name:26s} {runner:14s} {n:8d} {rate:20,.0f} {1e6 / rate:9.1f} {vs:>15s}")
    for name, runner, n, rate in rows:
        if runner == "BatchedEnv":
            ratio = rate / base[name]
            print(f"goal, {name}: BatchedEnv(64) / DummyVecEnv(4) per sub-env step = {ratio:.2f}x; goal >= {BATCH_GOAL:g}x: {'met' if ratio >= BATCH_GOAL else 'NOT met'}")

    hp = dict(n_steps=1024, batch_size=64, n_epochs=10, seed=0)
    makers = {"CartPole-v1 (gymnasium)": lambda: gymnasium.make("CartPole-v1"),
              "SingleAssetEnv (XOM)": lambda: SingleAssetEnv(data, "XOM", episode_length=256)}
    ppo_rate(makers["SingleAssetEnv (XOM)"], 1024, hp)                                  # warm-up: torch, the kernels
    best = {k: 0.0 for k in makers}
    for _ in range(args.repeats):
        for k, make in makers.items(): best[k] = max(best[k], ppo_rate(make, args.ppo_steps, hp))
    print(f"\nPPO training speed (MlpPolicy, n_steps {hp['n_steps']}, batch_size {hp['batch_size']}, n_epochs {hp['n_epochs']}, seed 0, "
          f"{torch.get_num_threads()} torch thread; {args.ppo_steps} timesteps, best of {args.repeats}):")
    cart = best["CartPole-v1 (gymnasium)"]
    for k, r in best.items(): print(f"  {k:26s} {r:8,.0f} steps/s {r / cart:6.2f}x")
    ratio = best["SingleAssetEnv (XOM)"] / cart
    print(f"goal: PPO on SingleAssetEnv / PPO on CartPole-v1 = {ratio:.2f}x; goal >= {PPO_GOAL:g}x: {'met' if ratio >= PPO_GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

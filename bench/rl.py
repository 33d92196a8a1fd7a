"""Part of `make bench` (bench/suite.py): reinforcement-learning speed on the embedded sample, each beside a peer in the same run.

- Environment steps of `SingleAssetEnv` (XOM) and `PortfolioEnv` (all 20 symbols), `episode_length=256`, random
  actions, resets included, the same number of sub-environment steps on each side (sized to about 1.5 s of one
  environment): traderbot's `BatchedEnv` of 64 beside SB3's `DummyVecEnv` of 4. Goal (issue 14): `BatchedEnv` >= 2x
  `DummyVecEnv` per sub-environment step. Beside it, informational: one environment's `step` loop against
  `DummyVecEnv` of 4. Gate: on the same seeded actions for 300 steps (an episode end included), `BatchedEnv` of 4
  gives `DummyVecEnv`'s observations, rewards and dones, and one environment gives its first sub-environment's.
- PPO training (collecting and learning, model construction excluded) on `SingleAssetEnv` beside PPO on gymnasium's
  `CartPole-v1`, with the same hyperparameters (MlpPolicy, n_steps 1024, batch_size 64, n_epochs 10, seed 0) and one
  torch thread, 4096 timesteps a run, 3 runs each, alternating. Goal (issue 14): PPO on the trading environment at
  >= 0.95x CartPole's speed (time ratio <= 1/0.95). Gate: SB3's `check_env` passes on `SingleAssetEnv` and every run
  trained its timesteps. (The median now counts, as everywhere in the suite; this file used to keep the best run.)
Interleaved repetitions, median and spread (bench/harness.py). `quick`: 512 sub-environment steps, PPO with
n_steps 256, n_epochs 2, 256 timesteps, 2 repetitions (a smoke test of the bench, not numbers to quote).
CPU only. Numbers are what this machine measured on this run.
"""
from __future__ import annotations
import argparse, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BENCH = "rl"
BATCH_GOAL, PPO_GOAL = 2.0, 0.95   # issue 14


def stepper(venv, actions) -> callable:
    "A callable stepping `venv` (a VecEnv, or one env when `actions` are single actions) through `actions`."
    if hasattr(venv, "num_envs"):
        venv.seed(0); venv.reset()
        def run():
            for a in actions: venv.step(a)
        return run
    venv.reset(seed=0)
    def run():
        for a in actions:
            _, _, term, trunc, _ = venv.step(a)
            if term or trunc: venv.reset()
    return run


def env_gate(make, act, steps:int=300) -> str:
    "Raise unless BatchedEnv(4) steps as DummyVecEnv(4) and one env as DummyVecEnv's first, on the same seeded actions."
    from stable_baselines3.common.vec_env import DummyVecEnv
    from traderbot.research.rl.vec import BatchedEnv
    rng = np.random.default_rng(1)
    acts = [act(rng, 4) for _ in range(steps)]
    dummy, batched, one = DummyVecEnv([make] * 4), BatchedEnv(make, 4), make()
    dummy.seed(0); batched.seed(0)
    od, ob, o1 = dummy.reset(), batched.reset(), one.reset(seed=0)[0]
    gap, ends = float(np.abs(od - ob).max()), 0
    gap1 = float(np.abs(od[0] - o1).max())
    for a in acts:
        od, rd, dd, _ = dummy.step(a); ob, rb, db, _ = batched.step(a)
        o1, r1, term, trunc, _ = one.step(a[0])
        if term or trunc: o1, _ = one.reset()
        if (dd != db).any() or dd[0] != (term or trunc): raise AssertionError("rl: the runners' episode ends differ")
        gap = max(gap, float(np.abs(od - ob).max()), float(np.abs(rd - rb).max()))
        gap1 = max(gap1, float(np.abs(od[0] - o1).max()), abs(float(rd[0]) - float(np.float32(r1))))   # DummyVecEnv keeps rewards as float32
        ends += int(dd.sum())
    if gap > 1e-9 or gap1 > 1e-9: raise AssertionError(f"rl: BatchedEnv vs DummyVecEnv gap {gap:.1e}, one env vs DummyVecEnv gap {gap1:.1e} (> 1e-9)")
    return f"{steps} seeded steps ({ends} episode ends): BatchedEnv(4) = DummyVecEnv(4) (gap {gap:.1e}), one env = its first (gap {gap1:.1e})"


def env_cases(data, seconds:float|None, reps:int) -> list[dict]:
    "For both environments: BatchedEnv(64) and one env against DummyVecEnv(4), the same sub-environment steps each."
    from stable_baselines3.common.vec_env import DummyVecEnv
    from traderbot.research.rl.envs import PortfolioEnv, SingleAssetEnv
    from traderbot.research.rl.vec import BatchedEnv
    kinds = {"SingleAssetEnv (XOM)": (lambda: SingleAssetEnv(data, "XOM", episode_length=256), lambda r, n: r.integers(0, 3, n)),
             f"PortfolioEnv ({len(data.symbols)} symbols)": (lambda: PortfolioEnv(data, episode_length=256),
                                                               lambda r, n: r.uniform(-1, 1, (n, len(data.symbols) + 1)).astype(np.float32))}
    out = []
    for name, (make, act) in kinds.items():
        checked = env_gate(make, act)
        rng, env = np.random.default_rng(0), make()
        stepper(env, [act(rng, 1)[0] for _ in range(200)])()                              # warm-up: compile, caches
        if seconds is None: total = 512
        else:
            t0 = time.perf_counter(); stepper(env, [act(rng, 1)[0] for _ in range(500)])()   # size each run to about `seconds`
            total = max(512, int(500 / (time.perf_counter() - t0) * seconds)) // 64 * 64
        dummy = stepper(DummyVecEnv([make] * 4), [act(rng, 4) for _ in range(total // 4)])
        batched = stepper(BatchedEnv(make, 64), [act(rng, 64) for _ in range(total // 64)])
        single = stepper(env, [act(rng, 1)[0] for _ in range(total)])
        out.append(harness.compare(BENCH, f"{name}: {total:,} sub-env steps", batched, dummy, ours_name="BatchedEnv(64)",
                                   peer_name="SB3 DummyVecEnv(4)", reps=reps, goal={"min_speedup": BATCH_GOAL}, gate=lambda: checked))
        out.append(harness.compare(BENCH, f"{name}: {total:,} steps, one env", single, dummy, ours_name="env.step loop",
                                   peer_name="SB3 DummyVecEnv(4)", reps=reps, gate=lambda: checked))
    return out


def ppo_seconds(make_env, timesteps:int, hp:dict) -> float:
    "Seconds of PPO's `learn(timesteps)` (rollouts and updates), model construction excluded; raises unless it trained them all."
    from stable_baselines3 import PPO
    model = PPO("MlpPolicy", make_env(), device="cpu", verbose=0, **hp)
    t0 = time.perf_counter(); model.learn(timesteps); dt = time.perf_counter() - t0
    if model.num_timesteps < timesteps: raise AssertionError(f"rl: PPO trained {model.num_timesteps} of {timesteps} timesteps")
    return dt


def ppo_case(data, quick:bool) -> dict:
    "PPO on SingleAssetEnv beside PPO on CartPole-v1, same hyperparameters, alternating runs."
    import gymnasium
    from stable_baselines3.common.env_checker import check_env
    from traderbot.research.rl.envs import SingleAssetEnv
    hp = dict(n_steps=256, batch_size=64, n_epochs=2, seed=0) if quick else dict(n_steps=1024, batch_size=64, n_epochs=10, seed=0)
    steps, reps = (256, 2) if quick else (4096, 3)
    trading, cart = (lambda: SingleAssetEnv(data, "XOM", episode_length=256)), (lambda: gymnasium.make("CartPole-v1"))
    check_env(trading())
    ppo_seconds(trading, hp["n_steps"], hp); ppo_seconds(cart, hp["n_steps"], hp)           # warm-up: torch, the kernels
    to, tp = [], []
    for i in range(reps):
        for side, make in ((to, trading), (tp, cart)) if i % 2 == 0 else ((tp, cart), (to, trading)):
            side.append(ppo_seconds(make, steps, hp))
    return harness.result(BENCH, f"PPO, {steps:,} timesteps (n_steps {hp['n_steps']}, n_epochs {hp['n_epochs']}, 1 torch thread)",
                          "PPO on SingleAssetEnv", "PPO on CartPole-v1", to, tp, goal={"max_ratio": round(1 / PPO_GOAL, 3)},
                          gate=f"SB3 check_env passes on SingleAssetEnv; every run trained its {steps:,} timesteps")


def measure(quick:bool) -> list[dict]:
    "Environment steps and PPO training on the embedded sample (small with `quick`); one torch thread, restored after."
    import torch
    from traderbot.data.sample import load_benchmark, load_closes
    from traderbot.research.rl.envs import market_arrays
    data = market_arrays(load_closes(), load_benchmark())
    before = torch.get_num_threads(); torch.set_num_threads(1)
    try: return env_cases(data, None if quick else 1.5, 2 if quick else 5) + [ppo_case(data, quick)]
    finally: torch.set_num_threads(before)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few steps: a smoke test of the bench, not numbers to quote")
    print(harness.table(measure(ap.parse_args(argv).quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

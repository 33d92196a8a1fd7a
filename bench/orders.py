"""`make bench`: signal-to-order latency through traderbot's order path, each path next to its peer in the same run.

Signal-to-order latency is the time from a target (a planned order) to the broker's answer recorded in the
store: storing the intent, the risk gate with the kill switch, the SUBMITTED mark, the broker call, and the
acknowledgement and fills written back. Its peer is the bare broker call on the same broker in the same
run, so the difference is what traderbot's guarantees (intent before send, gate, ledger) cost.
Numbers are what this machine measured on this run; nothing here is a promise.
"""
from __future__ import annotations
import argparse, statistics, sys, tempfile, time
from decimal import Decimal
from pathlib import Path

import pandas as pd

from traderbot.store import ledger, database
from traderbot.brokers.paper import PaperBroker, market_at
from traderbot.core import CostModel, Order
from traderbot.execution.manager import OrderManager
from traderbot.risk.gate import OrderContext, RiskLimits

CLOSE = pd.Timestamp("2022-12-28 21:00", tz="UTC")
PRICES = {"AAPL": Decimal("126.04"), "MSFT": Decimal("239.82")}
LIMITS = RiskLimits(1.0, Decimal(10**9))
CTX = OrderContext(Decimal("126.04"), Decimal(10**9), Decimal(0), market_open=True, cash=Decimal(10**9))


def percentiles(ms:list[float]) -> dict:
    "p50, p99, mean and max of latencies in milliseconds."
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(ms), "p50 ms": q[49], "p99 ms": q[98], "mean ms": statistics.fmean(ms), "max ms": max(ms)}


def through_manager(engine, broker, account:str, n:int, prefix:str) -> list[float]:
    "Latency of store_intents + OrderManager.place for `n` one-order signals."
    acct = ledger.ensure_account(engine, account, "paper", Decimal(10**9))
    om, out = OrderManager(engine, broker, acct, LIMITS), []
    for i in range(n):
        o = Order(f"{prefix}-{i}", "AAPL", "buy", Decimal(1))
        t0 = time.perf_counter()
        ledger.store_intents(engine, acct, "bench", "2022-12-28", {}, {}, [o], {}, broker.name)
        om.place(o.client_order_id, CTX)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def bare_broker(broker, n:int, prefix:str) -> list[float]:
    "Latency of the broker's own submit, with no store, gate or ledger."
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        broker.submit(Order(f"{prefix}-{i}", "AAPL", "buy", Decimal(1)))
        out.append((time.perf_counter() - t0) * 1000)
    return out


def paper_rows(n:int, tmp:Path) -> dict:
    "The paper broker: bare submit against the full order path, on one SQLite store."
    engine = database.open_store(f"sqlite:///{tmp}/bench.db")
    broker = PaperBroker(engine, "bench", market_at(PRICES, CLOSE), CostModel(), Decimal(10**9))
    bare_broker(broker, 20, "warm")                       # first calls pay imports and statement compilation
    return {"paper broker: bare submit (peer)": percentiles(bare_broker(broker, n, "bare")),
            "paper broker: signal -> order manager -> fill": percentiles(through_manager(engine, broker, "bench", n, "om"))}


def alpaca_rows(n:int, tmp:Path) -> dict:
    "The Alpaca adapter over the local fake Alpaca server: bare submit against the full order path."
    from traderbot.brokers.alpaca import AlpacaBroker
    from traderbot.fakes.alpaca import FakeAlpaca
    engine = database.open_store(f"sqlite:///{tmp}/bench-alpaca.db")
    with FakeAlpaca("bench-key-id", "bench-secret", prices=dict(PRICES), cash=Decimal(10**9)) as fake:
        broker = AlpacaBroker("bench-key-id", "bench-secret", paper=True, url_override=fake.url, timeout_s=10)
        bare_broker(broker, 20, "warm")
        return {"alpaca adapter over fake server: bare submit (peer)": percentiles(bare_broker(broker, n, "bare")),
                "alpaca adapter over fake server: signal -> order manager -> fill": percentiles(through_manager(engine, broker, "bench", n, "om"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=1000, help="orders per path")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        rows = {**paper_rows(args.n, Path(d)), **alpaca_rows(min(args.n, 300), Path(d))}
    table = pd.DataFrame(rows).T
    table["n"] = table["n"].astype(int)
    print(f"signal-to-order latency, {time.strftime('%Y-%m-%d %H:%M')} on this machine (SQLite store, WAL):")
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())

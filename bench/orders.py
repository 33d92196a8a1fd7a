"""Part of `make bench` (bench/suite.py): signal-to-order latency through traderbot's order path, each path next to its peer in the same run.

Signal-to-order latency is the time from a target (a planned order) to the broker's answer recorded in the
store: storing the intent, the risk gate with the kill switch, the SUBMITTED mark, the broker call, and the
acknowledgement and fills written back. Its peer is the bare broker call on the same broker in the same
run, so the difference is what traderbot's guarantees (intent before send, gate, ledger) cost. Two brokers:
the paper broker (one SQLite store) and the Alpaca adapter over the local fake Alpaca server.
Each timed call is one order; ours and the peer alternate (bench/harness.py); the result keeps the median
(p50), the spread and the p99 of each side. Gate first: one order through each path must come back alike
(status, filled quantity and price) and the ledger must hold the manager's answer. No goal: the cost informs.
Numbers are what this machine measured on this run; nothing here is a promise.
"""
from __future__ import annotations
import argparse, itertools, statistics, sys, tempfile
from decimal import Decimal
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from traderbot.store import ledger, database  # noqa: E402
from traderbot.brokers.paper import PaperBroker, market_at  # noqa: E402
from traderbot.core import CostModel, Order, OrderStatus  # noqa: E402
from traderbot.execution.manager import OrderManager  # noqa: E402
from traderbot.risk.gate import OrderContext, RiskLimits  # noqa: E402

BENCH = "orders"
CLOSE = pd.Timestamp("2022-12-28 21:00", tz="UTC")
PRICES = {"AAPL": Decimal("126.04"), "MSFT": Decimal("239.82")}
LIMITS = RiskLimits(1.0, Decimal(10**9))
CTX = OrderContext(Decimal("126.04"), Decimal(10**9), Decimal(0), market_open=True, cash=Decimal(10**9))


def p99(xs:list[float]) -> float:
    "The 99th percentile (inclusive method) of `xs`."
    return statistics.quantiles(xs, n=100, method="inclusive")[98] if len(xs) > 1 else xs[0]


def order_paths(engine, broker, account:str):
    "Two one-order callables: through store_intents + OrderManager.place (ours) and the bare broker submit (peer), fresh ids each call."
    acct = ledger.ensure_account(engine, account, "paper", Decimal(10**9))
    om, ids = OrderManager(engine, broker, acct, LIMITS), itertools.count()
    def ours():
        o = Order(f"om-{next(ids)}", "AAPL", "buy", Decimal(1))
        ledger.store_intents(engine, acct, "bench", "2022-12-28", {}, {}, [o], {}, broker.name)
        return om.place(o.client_order_id, CTX)[0]
    def peer(): return broker.submit(Order(f"bare-{next(ids)}", "AAPL", "buy", Decimal(1)))
    return ours, peer, acct


def gate(engine, acct, ours, peer) -> str:
    "Raise unless one order through each path comes back alike (status, filled quantity, price) and the manager's answer is what the ledger holds."
    a, b = ours(), peer()
    stored = {o.client_order_id: o for o in ledger.orders_for(engine, acct)}.get(a.client_order_id)
    if a.status is not b.status or a.status not in (OrderStatus.ACCEPTED, OrderStatus.FILLED) or stored is None or stored.status is not a.status:
        raise AssertionError(f"orders: manager {a.status}, ledger {stored and stored.status}, bare {b.status}: expected the same, accepted or filled")
    if a.filled_quantity != b.filled_quantity or a.average_price != b.average_price:
        raise AssertionError(f"orders: manager {a.filled_quantity} @ {a.average_price}, bare {b.filled_quantity} @ {b.average_price}")
    return f"one order each way: both {a.status.value}, filled {a.filled_quantity} @ {a.average_price} (gap 0); the ledger holds the manager's answer"


def latency_case(case:str, engine, broker, n:int) -> dict:
    "Gate, warm-up (imports, statement compilation), then `n` interleaved one-order calls of each path."
    ours, peer, acct = order_paths(engine, broker, "bench")
    checked = gate(engine, acct, ours, peer)
    for _ in range(20): ours(); peer()
    to, tp = harness.timed_pair(ours, peer, n)
    return harness.result(BENCH, case, "order manager (intent, gate, ledger)", "bare broker submit", to, tp, gate=checked,
                          ours_p99=p99(to), peer_p99=p99(tp))


def paper_case(n:int, tmp:Path) -> dict:
    "The paper broker on one SQLite store."
    engine = database.open_store(f"sqlite:///{tmp}/bench.db")
    broker = PaperBroker(engine, "bench", market_at(PRICES, CLOSE), CostModel(), Decimal(10**9))
    return latency_case(f"paper broker, one order ({n} each)", engine, broker, n)


def alpaca_case(n:int, tmp:Path) -> dict:
    "The Alpaca adapter over the local fake Alpaca server."
    from traderbot.brokers.alpaca import AlpacaBroker
    from traderbot.fakes.alpaca import FakeAlpaca
    engine = database.open_store(f"sqlite:///{tmp}/bench-alpaca.db")
    with FakeAlpaca("bench-key-id", "bench-secret", prices=dict(PRICES), cash=Decimal(10**9)) as fake:
        broker = AlpacaBroker("bench-key-id", "bench-secret", paper=True, url_override=fake.url, timeout_s=10)
        return latency_case(f"alpaca adapter over fake server, one order ({n} each)", engine, broker, n)


def measure(quick:bool) -> list[dict]:
    "Both brokers: 1,000 paper and 300 Alpaca orders per path (20 each with `quick`)."
    n = 20 if quick else 1000
    with tempfile.TemporaryDirectory() as d:
        return [paper_case(n, Path(d)), alpaca_case(min(n, 300), Path(d))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few orders: a smoke test of the bench, not numbers to quote")
    print(harness.table(measure(ap.parse_args(argv).quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

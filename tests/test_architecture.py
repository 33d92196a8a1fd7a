"""The house rules of docs/architecture.md, checked on the exported package so they cannot quietly erode.

- imports run one way: no cycle between traderbot modules, counting imports made inside functions and the modules a
  module defers (`ledger = deferred("traderbot.store.ledger")`, imported at first use);
- sibling traderbot imports sit in a module's imports (top level), never inside a function;
- only `store/` runs SQL against the store's tables (the paper venue runs SQL on the tables it declares itself);
- every broker adapter implements the `Broker` port the same way, and importing the factory loads no broker SDK;
- every subpackage is a real package, and no module is left outside one but the core few.
"""
from __future__ import annotations
import ast, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "traderbot"
TOP_LEVEL = {"core", "config", "cli", "strategy", "daily", "replay", "drift", "pipeline", "alerts", "schedule", "compute"}   # modules that sit beside the subpackages
SQL_OWNERS = ("store/", "brokers/paper.py")                         # the store, and the paper venue's own book


def modules() -> dict[str, Path]:
    "Dotted name -> file of every module of the package (the nbdev index excluded)."
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        if p.name == "_modidx.py": continue
        out[".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = p
    return out


MODS = modules()


def imported(mod: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    "The traderbot modules an import statement of `mod` refers to."
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODS and a.name != "traderbot"]
    if node.level:
        base = mod.split(".") if MODS[mod].name == "__init__.py" else mod.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    elif (node.module or "").startswith("traderbot"): target = node.module
    else: return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODS else target for a in node.names
            if (f"{target}.{a.name}" if f"{target}.{a.name}" in MODS else target) in MODS]


def deferred_targets(node) -> list[str]:
    "The module a `deferred(\"traderbot....\")` call stands for (core.deferred: imported at its first use)."
    if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "deferred"
            and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("traderbot.")):
        return [node.args[0].value]
    return []


def graph() -> dict[str, set[str]]:
    g = {}
    for m, p in MODS.items():
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.Import, ast.ImportFrom)): deps |= set(imported(m, n))
            deps |= set(deferred_targets(n))
        g[m] = deps - {m, "traderbot"}
    return g


def test_imports_run_one_way():
    g, state, cycles = graph(), {}, []
    def visit(u, path):
        state[u] = "open"; path.append(u)
        for v in g[u]:
            if state.get(v) == "open": cycles.append(path[path.index(v):] + [v])
            elif v not in state: visit(v, path)
        path.pop(); state[u] = "done"
    for m in g:
        if m not in state: visit(m, [])
    assert cycles == [], f"import cycles: {cycles}"
    assert "traderbot.pipeline" not in g["traderbot.daily"] and "traderbot.daily" not in g["traderbot.pipeline"]
    assert {"traderbot.store.ledger", "traderbot.brokers.paper"} <= g["traderbot.brokers.factory"]   # deferred modules are edges too


def test_deferred_modules_name_real_modules_of_the_package():
    named = {t for p in MODS.values() for n in ast.walk(ast.parse(p.read_text())) for t in deferred_targets(n)}
    assert "traderbot.store.ledger" in named and named <= set(MODS), named - set(MODS)


def test_sibling_imports_sit_at_the_top_of_their_module():
    inside = []
    for m, p in MODS.items():
        if m == "traderbot.cli": continue   # the entry point imports per command, so `traderbot --help` loads nothing (issue 15's cold start)
        for fn in ast.walk(ast.parse(p.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            for n in ast.walk(fn):
                if isinstance(n, (ast.Import, ast.ImportFrom)) and imported(m, n): inside.append(f"{m}.{fn.name}: {ast.unparse(n)}")
                if isinstance(n, ast.ImportFrom) and n.level: inside.append(f"{m}.{fn.name}: {ast.unparse(n)}")
    assert inside == []


def test_only_the_store_runs_sql_against_its_tables():
    from traderbot.store import schema
    tables = set(schema.metadata.tables)
    offenders = []
    for m, p in MODS.items():
        rel = p.relative_to(PKG).as_posix()
        if rel.startswith(SQL_OWNERS) or rel.startswith("fakes/"): continue
        tree = ast.parse(p.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("sqlalchemy"):
                sql = [a.name for a in n.names if a.name in ("select", "insert", "update", "delete", "text", "func")]
                if sql: offenders.append(f"{m} imports {sql} from {n.module}")
            if isinstance(n, ast.ImportFrom) and n.module and n.module.endswith("store.schema"):
                named = [a.name for a in n.names if a.name in tables]
                if named: offenders.append(f"{m} imports the store's tables {named}")
            if isinstance(n, ast.Attribute) and n.attr in tables and isinstance(n.value, ast.Name) and n.value.id == "schema":
                offenders.append(f"{m} reads schema.{n.attr}")
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("transaction", "reading", "read_frame") \
               and isinstance(n.func.value, ast.Name) and n.func.value.id == "database":
                offenders.append(f"{m} opens its own connection with database.{n.func.attr}")
    assert offenders == []


def test_the_paper_venue_declares_its_own_tables():
    from traderbot.brokers import paper
    from traderbot.store import schema
    assert sorted(paper.metadata.tables) == ["paper_accounts", "paper_fills", "paper_orders", "paper_splits"]
    assert not set(paper.metadata.tables) & set(schema.metadata.tables)


ADAPTERS = [("traderbot.brokers.paper", "PaperBroker", "paper"), ("traderbot.brokers.alpaca", "AlpacaBroker", "alpaca"),
            ("traderbot.brokers.ib", "IBBroker", "ib"), ("traderbot.brokers.router", "Router", "router")]


@pytest.mark.parametrize("module, cls, name", ADAPTERS)
def test_every_broker_adapter_has_the_same_shape(module, cls, name):
    """Each adapter is a class whose `name` says which broker it is and which has every method of the `Broker` port,
    defined in its own module (added with fastcore's @patch, one notebook cell per concern)."""
    import importlib, inspect
    from traderbot.core import Broker
    mod = importlib.import_module(module)
    klass = getattr(mod, cls)
    port = [m for m in vars(Broker) if not m.startswith("_") and callable(getattr(Broker, m))]
    assert sorted(port) == ["account", "cancel", "fills", "get_order", "open_orders", "positions", "submit"]
    for m in port:
        fn = inspect.getattr_static(klass, m)
        assert callable(fn) and fn.__module__ == module, (cls, m)
        assert list(inspect.signature(fn).parameters)[:2] == list(inspect.signature(getattr(Broker, m)).parameters)[:2], (cls, m)
    assert klass.name == name


def test_importing_the_broker_factory_loads_no_broker_sdk():
    code = ("import sys, traderbot.brokers.factory, traderbot.daily, traderbot.cli\n"
            "print(','.join(m for m in ('alpaca', 'ib_async') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_the_layout_is_subpackages_by_concern():
    top = {m.split(".")[1] for m in MODS if m.count(".") == 1}
    assert top == TOP_LEVEL | {"data", "store", "research", "news", "portfolio", "risk", "execution", "brokers", "dashboard", "fakes"}
    for pkg in ("data", "store", "research", "news", "portfolio", "risk", "execution", "brokers", "dashboard", "fakes"):
        assert (PKG / pkg / "__init__.py").exists(), pkg

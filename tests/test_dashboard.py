"""The Voila dashboards end to end: a seeded store, Voila on 127.0.0.1 with a token, a headless Chromium.

Covers docs/reliability.md S4 (loopback only, a 32+ character token, no token -> refused) and S5 (tracebacks
hidden, path traversal refused), and checks that the portfolio page shows what the store holds, fresh at
request time even though Voila pre-heats its kernel, with hostile text shown as text.
"""
import http.client, os, re, signal, socket, subprocess, sys, time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, parse_qs

import pandas as pd
import psutil
import pytest

from traderbot.config import load_settings
from traderbot.core import Fill, Order, OrderStatus, TraderbotError
from traderbot.dashboard.serve import free_port, start_dashboards, stop_dashboards, wait_preheated
from traderbot.store.ledger import (account_cash, account_id, ensure_account, record_alert, record_fill, record_snapshot, save_order,
                                    store_intents)
from traderbot.store.runs import finish_run, start_run
from traderbot.store.database import open_store

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ACCOUNT = "demo"
HOSTILE = '<img src=x onerror="window.__tb_xss = 1">'   # an order reason as a hostile broker could send it
ORDERS = {"tb-20221228-AAPL-a1a1a1a1a1": ("AAPL", "20"), "tb-20221228-MSFT-b2b2b2b2b2": ("MSFT", "10")}
FILLS = [("x1", "tb-20221228-AAPL-a1a1a1a1a1", "AAPL", "20", "126.10"), ("x2", "tb-20221228-MSFT-b2b2b2b2b2", "MSFT", "4", "240.50"),
         ("x3", "tb-20221228-MSFT-b2b2b2b2b2", "MSFT", "6", "240.50")]
POSITIONS = [["AAPL", "20", "126.10"], ["MSFT", "10", "240.50"]]   # symbol, quantity, average cost as shown
LATEST_EQUITY, LATEST_DAY = "1,002,345.12", "2022-12-29"           # recorded after Voila has pre-heated


def seed_store(url: str):
    "A store with one account, one run, two intents (one with a hostile reason), fills and two snapshots."
    eng = open_store(url)
    acct = ensure_account(eng, ACCOUNT, "paper", Decimal("1000000"))
    start_run(eng, "daily-1", "daily", {"as_of": "2022-12-28"}, git_commit="abc123")
    intents = [Order(cid, sym, "buy", Decimal(qty), reason=HOSTILE if sym == "MSFT" else None)
               for cid, (sym, qty) in ORDERS.items()]
    store_intents(eng, acct, "momentum", "2022-12-28", {"AAPL": .1, "MSFT": .1}, {"AAPL": "top momentum"}, intents,
                  {"AAPL": Decimal("126"), "MSFT": Decimal("240")}, "paper", run_id="daily-1")
    for o in intents: save_order(eng, o.with_status(OrderStatus.SUBMITTED))
    ts = pd.Timestamp("2022-12-28 21:00", tz="UTC")
    for ex, cid, sym, qty, px in FILLS:
        record_fill(eng, acct, Fill(ex, cid, sym, "buy", Decimal(qty), Decimal(px), Decimal("0.25"), ts))
    finish_run(eng, "daily-1", "succeeded")
    record_snapshot(eng, acct, "2022-12-27", Decimal("1000000"), Decimal("0"))
    record_snapshot(eng, acct, "2022-12-28", account_cash(eng, acct), Decimal("5000"))
    record_alert(eng, "warning", "limit:VAR_BUDGET", HOSTILE, {"key": "seeded"}, acct)
    from traderbot.daily import risk_report
    from traderbot.risk.report import save_risk_report
    from traderbot.data.sample import load_closes
    cfg = load_settings(ROOT / "settings.ini", env={"TRADERBOT__STORE__URL": url, "TRADERBOT__TRADERBOT__ACCOUNT": ACCOUNT})
    px = load_closes()
    save_risk_report(eng, risk_report(eng, cfg, px, px.index[-1]))
    return eng


def record_latest_snapshot(eng):
    "The snapshot a run writes while the dashboard server is already up."
    acct = account_id(eng, ACCOUNT)
    cash = account_cash(eng, acct)
    return record_snapshot(eng, acct, LATEST_DAY, cash, Decimal("1002345.12") - cash)


def voila_family(proc) -> list[psutil.Process]:
    "The Voila process and its kernels."
    p = psutil.Process(proc.pid)
    return [p, *p.children(recursive=True)]


def wait_until_kernel_parked(proc, port: int, timeout_s: float = 120) -> None:
    "Wait until the pre-heated kernel sits in `wait_for_visitor`: else the page would show the store as of kernel start."
    try: wait_preheated(proc, port, timeout_s)
    except TraderbotError as e: pytest.fail(str(e))


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, str]:
    "One GET on 127.0.0.1 without following redirects: status, headers, body."
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        con.request("GET", path, headers=headers or {})
        r = con.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode(errors="replace")
    finally: con.close()


def audit_seeded(server) -> None:
    "The ledger audit of the store the dashboards serve (ledger side: the seeded store has no venue): the requests changed nothing."
    from test_reliability import assert_ledger
    eng = server["engine"]
    assert_ledger(eng, account_id(eng, ACCOUNT), None)
    from traderbot.store.ledger import orders_for
    assert [(o.client_order_id, o.status) for o in orders_for(eng, account_id(eng, ACCOUNT))] == [(c, OrderStatus.FILLED) for c in ORDERS]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    "Voila serving nbs/dashboards over a seeded store; stopped (kernels included) at the end."
    tmp = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{tmp}/store.db"
    eng = seed_store(url)
    env = {**os.environ, "TRADERBOT_SETTINGS": str(ROOT / "settings.ini"), "TRADERBOT__STORE__URL": url,
           "TRADERBOT__TRADERBOT__ACCOUNT": ACCOUNT}
    cfg = load_settings(env=env)
    port = free_port()
    t0 = time.monotonic()
    proc, page_url = start_dashboards(cfg, port=port, env=env, log_path=tmp / "voila.log", timeout_s=120)
    print(f"voila answered after {time.monotonic() - t0:.1f} s")
    try: yield dict(proc=proc, port=port, url=page_url, token=parse_qs(urlsplit(page_url).query)["token"][0], engine=eng, log=tmp / "voila.log")
    finally: stop_dashboards(proc)


@pytest.mark.timeout(180)
def test_portfolio_page_shows_the_store(server):
    if not CHROMIUM.exists(): pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright
    port, token = server["port"], server["token"]
    wait_until_kernel_parked(server["proc"], port)
    record_latest_snapshot(server["engine"])   # after the kernel was heated: the page must still show it
    artifacts = ROOT / "test-artifacts"; artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1800})
            page.goto(server["url"])                                # the URL `make dashboard` prints
            page.get_by_text("portfolio.ipynb").wait_for(timeout=60_000)         # the tree lists the dashboard
            t0 = time.monotonic()
            page.goto(f"http://127.0.0.1:{port}/voila/render/portfolio.ipynb?token={token}")
            page.wait_for_selector(".tb-positions table", timeout=90_000)
            print(f"portfolio page rendered in {time.monotonic() - t0:.1f} s")
            rows = page.eval_on_selector_all(".tb-positions table tbody tr",
                                             "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")
            assert rows == POSITIONS
            headline = page.inner_text(".tb-equity-latest")
            assert LATEST_EQUITY in headline and LATEST_DAY in headline, headline
            assert page.locator(".tb-equity-chart svg").count() == 1 and page.locator(".tb-equity-chart svg").is_visible()
            orders = page.eval_on_selector_all(".tb-orders table tbody tr", "rs => rs.map(r => r.cells[2].textContent.trim())")
            assert sorted(orders) == sorted(ORDERS)
            assert HOSTILE in page.inner_text(".tb-orders")            # shown as text ...
            assert page.evaluate("window.__tb_xss") is None             # ... never run as markup
            assert page.locator(".tb-orders img").count() == 0
            fills = page.eval_on_selector_all(".tb-fills table tbody tr", "rs => rs.map(r => r.cells[1].textContent.trim())")
            assert fills == ["x3", "x2", "x1"]
            assert "daily-1" in page.inner_text(".tb-runs")
            assert "Traceback" not in page.inner_text("body")
            page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)   # Voila scrolls inside a div: a tall viewport shows all
        finally: browser.close()


def expected_risk(eng):
    "The risk page's numbers computed independently from the sample's closes and the seeded ledger."
    import numpy as np
    from traderbot.data.sample import load_closes
    px = load_closes()
    day = px.index[-1]                                          # 2022-12-28: the last session the data and the store share
    hold = {"AAPL": 20 * px.at[day, "AAPL"], "MSFT": 10 * px.at[day, "MSFT"]}
    equity = float(account_cash(eng, account_id(eng, ACCOUNT))) + sum(hold.values())
    rets = px.loc[:day, ["AAPL", "MSFT"]].pct_change().iloc[-500:].iloc[1:].fillna(0.0)
    pnl = rets.to_numpy() @ (np.array([hold["AAPL"], hold["MSFT"]]) / equity)
    covid = sum(v * (px.at[pd.Timestamp("2020-03-23", tz="UTC"), s] / px.at[pd.Timestamp("2020-02-19", tz="UTC"), s] - 1) for s, v in hold.items())
    return dict(var=float(np.quantile(-pnl, 0.99)), covid=covid, corr=float(np.corrcoef(rets["AAPL"], rets["MSFT"])[0, 1]),
                gross=sum(hold.values()) / equity)


@pytest.mark.timeout(240)
def test_risk_page_shows_the_report(server):
    if not CHROMIUM.exists(): pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright
    port, token = server["port"], server["token"]
    want = expected_risk(server["engine"])
    artifacts = ROOT / "test-artifacts"; artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            t0 = time.monotonic()
            page.goto(f"http://127.0.0.1:{port}/voila/render/risk.ipynb?token={token}")
            page.wait_for_selector(".tb-alerts", timeout=120_000)
            print(f"risk page rendered in {time.monotonic() - t0:.1f} s")
            head = page.inner_text(".tb-risk-headline")
            assert "2022-12-28" in head and f"historical VaR {want['var']:.2%}" in head, (head, want)
            methods = page.eval_on_selector_all(".tb-var table tbody tr", "rs => rs.map(r => r.cells[0].textContent.trim())")
            assert methods == ["historical", "parametric", "cornish_fisher", "monte_carlo"]
            stress = {r[0]: r for r in page.eval_on_selector_all(".tb-stress table tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")}
            assert stress["Covid"][4] == f"{want['covid']:,.2f}", (stress["Covid"], want["covid"])
            assert {"GFC", "dot-com", "2022 rates"} <= set(stress)
            cells = page.eval_on_selector_all(".tb-correlation td", "cs => cs.map(c => c.textContent.trim())")
            assert cells == ["1.00", f"{want['corr']:.2f}", f"{want['corr']:.2f}", "1.00"], cells
            limits = {r[0]: r for r in page.eval_on_selector_all(".tb-limits table tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")}
            assert limits["max_gross_exposure"][1] == f"{want['gross']:.2%}" and "var_budget" in limits, limits
            assert set(page.eval_on_selector_all(".tb-breakers table tbody tr", "rs => rs.map(r => r.cells[0].textContent.trim())")) == {"index_drop", "vol_spike", "daily_loss", "drawdown"}
            assert HOSTILE in page.inner_text(".tb-alerts") and page.locator(".tb-alerts img").count() == 0
            assert page.evaluate("window.__tb_xss") is None
            assert "Traceback" not in page.inner_text("body")
            page.screenshot(path=str(artifacts / "risk.png"), full_page=True)
        finally: browser.close()


@pytest.mark.timeout(180)
def test_s4_requests_without_the_token_are_refused(server):
    port, token = server["port"], server["token"]
    assert len(token) >= 32
    for path in ["/", "/voila/render/portfolio.ipynb", "/voila/render/portfolio.ipynb?token=" + "x" * 43]:
        status, headers, body = get(port, path)
        assert status in (302, 403), (path, status)
        assert "tb-" not in body and "AAPL" not in body and token not in body
        if status == 302: assert headers["Location"].startswith("/login"), headers
    status, _, _ = get(port, "/", {"Authorization": f"token {token}"})
    assert status == 200   # the same request with the token is served
    audit_seeded(server)


@pytest.mark.timeout(180)
def test_s5_no_path_traversal(server):
    auth = {"Authorization": f"token {server['token']}"}
    for path in ["/voila/files/..%2F..%2Fsettings.ini", "/voila/files/%2Fetc%2Fpasswd", "/voila/files/portfolio.ipynb",
                 "/voila/static/..%2F..%2F..%2F..%2F..%2F..%2Fsettings.ini", "/voila/render/..%2F..%2Fsettings.ini",
                 "/voila/tree/..%2F..%2F", "/api/contents"]:
        status, _, body = get(server["port"], path, auth)
        assert status != 200, path
        assert "[store]" not in body and "root:" not in body and "tb-positions" not in body, path
    audit_seeded(server)


@pytest.mark.timeout(180)
def test_s4_voila_listens_on_loopback_only(server):
    proc, port = server["proc"], server["port"]
    assert "--show_tracebacks=False" in proc.args and "--Voila.ip=127.0.0.1" in proc.args
    listening = [(p.pid, c.laddr) for p in voila_family(proc) for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert (proc.pid, ("127.0.0.1", port)) in [(pid, (a.ip, a.port)) for pid, a in listening]
    assert all(a.ip == "127.0.0.1" for _, a in listening), listening   # Voila and its kernels
    # the token never appears on a command line, where any local user could read it with ps
    assert not [p.pid for p in voila_family(proc) if server["token"] in " ".join(p.cmdline())]
    audit_seeded(server)


@pytest.mark.timeout(180)
def test_stop_ends_voila_and_its_kernels(server):
    proc = server["proc"]
    family = voila_family(proc)
    assert len(family) >= 2                                   # Voila and at least the pre-heated kernel
    assert stop_dashboards(proc) == 0
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    with pytest.raises(OSError): socket.create_connection(("127.0.0.1", server["port"]), timeout=2)


@pytest.mark.timeout(180)
def test_a_voila_that_cannot_start_is_reported(tmp_path, monkeypatch):
    import traderbot.dashboard.serve as serve
    cfg = load_settings(ROOT / "settings.ini", env={"TRADERBOT__STORE__URL": f"sqlite:///{tmp_path}/s.db"})
    with socket.socket() as taken:                           # the port is busy: Voila must not move elsewhere
        taken.bind(("127.0.0.1", 0)); taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TraderbotError, match=f"dashboard port {port} on 127.0.0.1 is not free"):   # refused before Voila starts
            start_dashboards(cfg, port=port, log_path=tmp_path / "voila.log")
        monkeypatch.setattr(serve, "_check_port", lambda host, port: None)   # and were it not, Voila's own failure is reported
        t0 = time.monotonic()
        with pytest.raises(TraderbotError, match=r"voila exited with code 1(.|\n)*no available port"):
            start_dashboards(cfg, port=port, log_path=tmp_path / "voila.log")
        assert time.monotonic() - t0 < 60


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_prints_the_url_and_cleans_up(tmp_path, stop_signal):
    "`serve_dashboards` (what `make dashboard` runs): prints a working URL; Ctrl-C or SIGTERM leaves nothing running."
    seed_store(f"sqlite:///{tmp_path}/store.db")
    port = free_port()
    env = {**os.environ, "TRADERBOT_SETTINGS": str(ROOT / "settings.ini"), "TRADERBOT__STORE__URL": f"sqlite:///{tmp_path}/store.db",
           "TRADERBOT__DASHBOARD__PORT": str(port), "TRADERBOT__PIPELINE__REPORTS_DIR": str(tmp_path / "reports")}
    code = "from traderbot.config import load_settings; from traderbot.dashboard.serve import serve_dashboards; serve_dashboards(load_settings())"
    serve = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        line = serve.stdout.readline()                       # blocks until Voila answers
        assert re.fullmatch(rf"Dashboards: http://127\.0\.0\.1:{port}/\?token=[\w-]{{32,}}\n", line), line
        family = [p for p in psutil.Process(serve.pid).children(recursive=True)]
        assert get(port, "/" + line.split("/", 3)[3].strip())[0] == 200
        serve.send_signal(stop_signal)
        assert serve.wait(30) == 0
        assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        with pytest.raises(OSError): socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        if serve.poll() is None: serve.kill(); serve.wait()

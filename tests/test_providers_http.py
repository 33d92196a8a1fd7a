"""The market-data adapters (Polygon, Alpha Vantage) against their local fakes, through the shared `ProviderClient`:
exact bars, pagination, corporate actions, throttling, retries, timeouts, and errors that name the provider and the
endpoint but never the key. Everything runs on 127.0.0.1; no test sleeps for real except the timeout and thread cases."""
from __future__ import annotations

import logging
import threading
import time

import pandas as pd
import pytest

from traderbot.core import ProviderError
from traderbot.data.providers.alphavantage import AlphaVantageProvider
from traderbot.data.providers.base import BarProvider
from traderbot.data.providers.http import ProviderClient, RateLimiter
from traderbot.data.providers.polygon import PolygonProvider
from traderbot.fakes.alphavantage import FakeAlphaVantage
from traderbot.fakes.polygon import AGGS_ROUTE, DIVIDENDS_ROUTE, SPLITS_ROUTE, FakeJSONServer, FakeReply, FakePolygon

KEY = "k3y-S3CR3T-9f2e"        # distinctive, so a leak is easy to spot
FAST = (10_000, 1.0)           # a rate that never waits, for tests about something else

BARS = {
    "AAPL": [("2024-06-03", 192.90, 194.99, 192.52, 194.03, 50080539), ("2024-06-04", 194.64, 195.32, 193.03, 194.35, 47471445),
             ("2024-06-05", 195.40, 196.90, 194.87, 195.87, 54156785), ("2024-06-06", 195.69, 196.50, 194.17, 194.48, 41181753),
             ("2024-06-07", 194.65, 196.94, 194.14, 196.89, 53103912)],
    "BRK.B": [("2024-06-06", 405.12, 408.00, 404.50, 407.33, 3201456), ("2024-06-07", 407.00, 409.90, 406.10, 409.01, 2876543)],
    # winter dates too: Polygon's t is 05:00 UTC then, 04:00 in summer
    "NVDA": [("2024-01-02", 49.24, 49.30, 47.60, 48.17, 411254000), ("2024-06-10", 120.37, 123.10, 117.01, 121.79, 314162700)],
}
SPLITS = [("NVDA", "2024-06-10", 10.0), ("AAPL", "2020-08-31", 4.0), ("GE", "2021-08-02", 0.125)]
DIVIDENDS = [("AAPL", "2024-05-10", 0.25), ("AAPL", "2024-02-09", 0.24), ("NVDA", "2024-06-11", 0.01)]


class FakeClock:
    "A clock that moves only when someone sleeps on it."
    def __init__(self): self.now, self.sleeps, self.lock = 0.0, [], threading.Lock()
    def __call__(self): return self.now
    def sleep(self, s):
        with self.lock: self.sleeps.append(s); self.now += s


def expected_bars(symbols, start, end) -> pd.DataFrame:
    "What an adapter must return for `BARS`: the same numbers, keyed by (session day 00:00 UTC, symbol)."
    rows = [(pd.Timestamp(d, tz="UTC"), s, o, h, l, c, float(v)) for s in symbols for d, o, h, l, c, v in BARS.get(s, []) if start <= d <= end]
    df = pd.DataFrame(rows, columns=["timestamp", "symbol", "open", "high", "low", "close", "volume"])
    return df.set_index(["timestamp", "symbol"]).sort_index()


@pytest.fixture(params=["polygon", "alphavantage"])
def adapter(request):
    "(provider name, fake server, adapter) for each provider over the same data; Polygon pages two results at a time."
    if request.param == "polygon":
        fake = FakePolygon(KEY, bars=BARS, splits=SPLITS, dividends=DIVIDENDS, page_size=2, hang_s=3)
        make = lambda **kw: PolygonProvider(KEY, base_url=fake.url, **{"rate": FAST, **kw})
    else:
        fake = FakeAlphaVantage(KEY, bars=BARS, splits=SPLITS, dividends=DIVIDENDS, hang_s=3)
        make = lambda **kw: AlphaVantageProvider(KEY, base_url=fake.url, today=lambda: pd.Timestamp("2024-06-12"), **{"rate": FAST, **kw})
    with fake:
        yield request.param, fake, make


# ---------------------------------------------------------------------------------------------------------
# Data: what the fake holds is what comes back

def test_bars_are_exactly_the_fakes(adapter):
    name, fake, make = adapter
    p = make()
    assert isinstance(p, BarProvider) and p.name == name
    got = p.daily_bars(["AAPL", "BRK.B", "NVDA"], "2024-01-01", "2024-06-10")
    want = expected_bars(["AAPL", "BRK.B", "NVDA"], "2024-01-01", "2024-06-10")
    flat = lambda df: [(t.isoformat(), sym, *row) for (t, sym), row in zip(df.index, df[want.columns].values.tolist())]
    assert flat(got) == flat(want)          # same sessions, symbols and numbers, in the same order
    assert str(got.index.get_level_values("timestamp").tz) == "UTC"


def test_bars_range_is_inclusive_and_filtered(adapter):
    _, _, make = adapter
    got = make().daily_bars(["AAPL"], "2024-06-04", "2024-06-06")
    assert [t.date().isoformat() for t in got.index.get_level_values("timestamp")] == ["2024-06-04", "2024-06-05", "2024-06-06"]


def test_polygon_follows_next_url_and_sends_the_key_on_every_page():
    with FakePolygon(KEY, bars=BARS, page_size=1) as fake:
        got = PolygonProvider(KEY, base_url=fake.url, rate=FAST).daily_bars(["AAPL"], "2024-06-01", "2024-06-30")
        assert len(got) == 5 and fake.count(AGGS_ROUTE) == 5
        assert sum("cursor" in q for _, q in fake.queries) == 4
        assert all(q.get("apiKey") == KEY for _, q in fake.queries)


def test_polygon_symbol_without_bars_has_no_rows():
    with FakePolygon(KEY, bars=BARS) as fake:
        got = PolygonProvider(KEY, base_url=fake.url, rate=FAST).daily_bars(["MSFT", "AAPL"], "2024-06-01", "2024-06-30")
        assert got.index.get_level_values("symbol").unique().tolist() == ["AAPL"]


def test_both_providers_map_the_same_corporate_actions(adapter):
    "Polygon's split_from/split_to and Alpha Vantage's split_factor give the same ratio; both give the same cash."
    _, fake, make = adapter
    got = make().corporate_actions(["AAPL", "NVDA", "GE"], "2020-01-01", "2024-12-31")
    assert got[["symbol", "ex_date", "kind"]].astype(str).values.tolist() == [
        ["AAPL", "2020-08-31 00:00:00+00:00", "split"], ["GE", "2021-08-02 00:00:00+00:00", "split"],
        ["AAPL", "2024-02-09 00:00:00+00:00", "dividend"], ["AAPL", "2024-05-10 00:00:00+00:00", "dividend"],
        ["NVDA", "2024-06-10 00:00:00+00:00", "split"], ["NVDA", "2024-06-11 00:00:00+00:00", "dividend"]]
    assert got.ratio.dropna().tolist() == [4.0, 0.125, 10.0]
    assert got.cash.dropna().tolist() == [0.24, 0.25, 0.01]


def test_polygon_paginates_reference_listings():
    many = [("AAPL", f"2023-{m:02d}-10", 0.24) for m in range(1, 13)]
    with FakePolygon(KEY, dividends=many, page_size=5) as fake:
        got = PolygonProvider(KEY, base_url=fake.url, rate=FAST).corporate_actions(["AAPL"], "2023-01-01", "2023-12-31")
        assert len(got) == 12 and fake.count(DIVIDENDS_ROUTE) == 3 and fake.count(SPLITS_ROUTE) == 1


# ---------------------------------------------------------------------------------------------------------
# Throttling: the client waits; the providers' throttles become retries or retryable errors

def test_client_rate_limit_spaces_adapter_calls(adapter):
    "Five calls a minute, as the free tiers allow: the sixth and later calls wait on the (fake) clock, none fails."
    _, fake, make = adapter
    p, clock = make(), FakeClock()
    p.client.limiter = RateLimiter(5, 60.0, sleep=clock.sleep, clock=clock)
    starts = []
    for _ in range(7):
        p.daily_bars(["NVDA"], "2024-01-01", "2024-06-10")
        starts.append(clock.now)
    assert starts == [0.0] * 5 + [60.0] * 2
    assert fake.count() == 7


def test_rate_limiter_is_thread_safe():
    "Threads sharing one limiter never put more than `calls` starts in any window."
    lim, starts, lock = RateLimiter(3, 0.25), [], threading.Lock()
    def work():
        for _ in range(3):
            lim.wait()
            with lock: starts.append(time.monotonic())
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads: t.start()
    for t in threads: t.join(5)
    starts.sort()
    assert len(starts) == 9
    assert all(sum(s <= t < s + 0.25 - 1e-3 for t in starts) <= 3 for s in starts)
    assert starts[-1] - starts[0] >= 0.5 - 1e-3          # 9 calls at 3 per 0.25 s need at least two full windows


@pytest.mark.parametrize("fault", ["429", "503"])
def test_transient_faults_are_retried_with_backoff(adapter, fault):
    _, fake, make = adapter
    naps = []
    p = make(sleep=naps.append)
    fake.inject(fault, times=2)
    got = p.daily_bars(["AAPL"], "2024-06-01", "2024-06-30")
    assert len(got) == 5
    assert naps == [1.0, 2.0]                        # exponential backoff from the default 1 s


def test_persistent_429_gives_up_retryable_naming_provider_and_endpoint():
    with FakePolygon(KEY, bars=BARS) as fake:
        naps = []
        p = PolygonProvider(KEY, base_url=fake.url, rate=FAST, retries=2, sleep=naps.append)
        fake.inject("429", times=3)
        with pytest.raises(ProviderError) as e: p.daily_bars(["AAPL"], "2024-06-03", "2024-06-07")
    assert e.value.retryable and naps == [1.0, 2.0] and fake.count() == 3
    assert str(e.value) == ("polygon /v2/aggs/ticker/AAPL/range/1/day/2024-06-03/2024-06-07: 429 too many requests: You've exceeded the "
                            "maximum requests per minute, please wait or upgrade your subscription to continue. https://polygon.io/pricing "
                            "(gave up after 3 tries)")


def test_retry_after_is_honoured():
    with FakeJSONServer() as srv:
        srv.push(FakeReply(429, {"error": "slow down"}, {"Retry-After": "7"}), FakeReply(503, "down", {"Retry-After": "0"}), FakeReply(200, {"ok": 1}))
        clock = FakeClock()
        c = ProviderClient("polygon", srv.url, {"apiKey": KEY}, rate=FAST, sleep=clock.sleep, clock=clock)
        assert c.get_json("/v3/x") == {"ok": 1}
    assert clock.sleeps == [7.0, 0.0]


def test_alphavantage_throttle_note_is_a_retryable_error_not_an_empty_result():
    with FakeAlphaVantage(KEY, bars=BARS) as fake:
        p = AlphaVantageProvider(KEY, base_url=fake.url, rate=FAST, today=lambda: pd.Timestamp("2024-06-12"))
        fake.inject("throttle")
        with pytest.raises(ProviderError) as e: p.daily_bars(["AAPL"], "2024-06-03", "2024-06-07")
        assert e.value.retryable and fake.count() == 1          # a 200 note is not retried inside the call
        assert str(e.value).startswith("alphavantage TIME_SERIES_DAILY: throttled (AAPL): Thank you for using Alpha Vantage!")


def test_alphavantage_daily_cap():
    "The free tier's 25 requests a day (here 3): past it, every call is a retryable throttle error."
    with FakeAlphaVantage(KEY, bars=BARS, daily_limit=3) as fake:
        p = AlphaVantageProvider(KEY, base_url=fake.url, rate=FAST, today=lambda: pd.Timestamp("2024-06-12"))
        for _ in range(3): assert len(p.daily_bars(["AAPL"], "2024-06-03", "2024-06-07")) == 5
        with pytest.raises(ProviderError, match="25 requests per day") as e: p.profiles(["AAPL"])
        assert e.value.retryable and "alphavantage OVERVIEW: throttled (AAPL)" in str(e.value)


def test_alphavantage_full_history_on_a_free_key_is_premium_not_retryable():
    with FakeAlphaVantage(KEY, bars=BARS, premium=False) as fake:
        p = AlphaVantageProvider(KEY, base_url=fake.url, rate=FAST, today=lambda: pd.Timestamp("2024-06-12"))
        assert len(p.daily_bars(["AAPL"], "2024-06-03", "2024-06-07")) == 5       # compact: fine
        with pytest.raises(ProviderError, match="alphavantage TIME_SERIES_DAILY: premium only") as e:
            p.daily_bars(["AAPL"], "2020-01-01", "2024-06-07")
        assert not e.value.retryable


# ---------------------------------------------------------------------------------------------------------
# Timeouts

def test_hang_is_retried_then_a_retryable_timeout_error(adapter):
    name, fake, make = adapter
    naps = []
    p = make(timeout_s=0.2, retries=1, sleep=naps.append)
    fake.inject("hang", times=2)
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as e: p.daily_bars(["AAPL"], "2024-06-03", "2024-06-07")
    assert time.monotonic() - t0 < 2
    assert e.value.retryable and naps == [1.0] and fake.count() == 2
    endpoint = "/v2/aggs/ticker/AAPL/range/1/day/2024-06-03/2024-06-07" if name == "polygon" else "TIME_SERIES_DAILY"
    assert str(e.value) == f"{name} {endpoint}: no answer within 0.2s (gave up after 2 tries)"


def test_hang_once_then_answer(adapter):
    _, fake, make = adapter
    p = make(timeout_s=0.2, sleep=lambda s: None)
    fake.inject("hang")
    assert len(p.daily_bars(["AAPL"], "2024-06-03", "2024-06-07")) == 5


# ---------------------------------------------------------------------------------------------------------
# Errors name the provider and endpoint, never the key

def _call(p, what):
    return {"bars": lambda: p.daily_bars(["AAPL"], "2024-06-03", "2024-06-07"),
            "actions": lambda: p.corporate_actions(["AAPL"], "2024-01-01", "2024-06-07"),
            "profiles": lambda: p.profiles(["AAPL"])}[what]()

ENDPOINTS = {("polygon", "bars"): "polygon /v2/aggs/ticker/AAPL/range/1/day/2024-06-03/2024-06-07",
             ("polygon", "actions"): "polygon /v3/reference/splits", ("polygon", "profiles"): "polygon /v3/reference/tickers/AAPL",
             ("alphavantage", "bars"): "alphavantage TIME_SERIES_DAILY", ("alphavantage", "actions"): "alphavantage SPLITS",
             ("alphavantage", "profiles"): "alphavantage OVERVIEW"}


@pytest.mark.parametrize("what", ["bars", "actions", "profiles"])
@pytest.mark.parametrize("fault", ["forbidden", "503", "429", "hang", "bad_key"])
def test_errors_name_provider_and_endpoint_without_the_key(adapter, fault, what, caplog):
    name, fake, make = adapter
    caplog.set_level(logging.DEBUG)
    if fault == "bad_key":
        p = PolygonProvider("not-" + KEY, base_url=fake.url, rate=FAST, retries=1, sleep=lambda s: None) if name == "polygon" else \
            AlphaVantageProvider("not-" + KEY, base_url=fake.url, rate=FAST, retries=1, sleep=lambda s: None)
    else:
        p = make(retries=1, sleep=lambda s: None, timeout_s=0.2)
        fake.inject(fault, times=2)
    with pytest.raises(ProviderError) as e: _call(p, what)
    msg = str(e.value)
    assert msg.startswith(ENDPOINTS[name, what] + ": "), msg
    assert KEY not in msg and "\n" not in msg
    assert e.value.retryable == (fault in ("503", "429", "hang")), msg
    if fault == "forbidden": assert not e.value.retryable and ("403 forbidden" in msg)
    if fault == "bad_key": assert ("401 unauthorized: Unknown API Key" in msg) if name == "polygon" else ("the API key was refused" in msg)
    assert all(KEY not in r.getMessage() for r in caplog.records)
    assert KEY not in repr(p) and KEY not in repr(p.client)


def test_key_in_a_providers_message_is_masked():
    "A provider (or a proxy) quoting the request URL back does not leak the key."
    with FakeJSONServer() as srv:
        srv.push(FakeReply(400, {"status": "ERROR", "error": f"bad request /v2/x?apiKey={KEY}&limit=5 (key {KEY})"}))
        c = ProviderClient("polygon", srv.url, {"apiKey": KEY}, rate=FAST)
        with pytest.raises(ProviderError) as e: c.get_json("/v2/x", {"limit": 5})
    assert str(e.value) == "polygon /v2/x: 400 bad request: bad request /v2/x?apiKey=***&limit=5 (key ***)"
    assert not e.value.retryable


def test_not_json_names_the_endpoint():
    with FakeJSONServer() as srv:
        srv.push(FakeReply(200, "<html>Service moved</html>"))
        c = ProviderClient("alphavantage", srv.url, {"apikey": KEY}, rate=FAST)
        with pytest.raises(ProviderError, match=r"^alphavantage OVERVIEW: answered 200 with a body that is not JSON"):
            c.get_json("/query", {"function": "OVERVIEW"}, endpoint="OVERVIEW")


def test_alphavantage_bad_symbol_names_the_symbol():
    with FakeAlphaVantage(KEY, bars=BARS) as fake:
        p = AlphaVantageProvider(KEY, base_url=fake.url, rate=FAST, today=lambda: pd.Timestamp("2024-06-12"))
        with pytest.raises(ProviderError, match="alphavantage TIME_SERIES_DAILY: XXXX refused: Invalid API call") as e:
            p.daily_bars(["XXXX"], "2024-06-03", "2024-06-07")
        assert not e.value.retryable

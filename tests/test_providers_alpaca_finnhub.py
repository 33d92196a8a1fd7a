"""The Alpaca and Finnhub market-data adapters against their local fakes, over real HTTP on 127.0.0.1.

Alpaca: the real alpaca-py clients (StockHistoricalDataClient, CorporateActionsClient) talk to FakeAlpaca's
market-data routes. Finnhub: the shared ProviderClient talks to FakeFinnhub. Each case states what must hold:
exact values and New York session dates round-trip, pages join up, a plan's refusal says what to do and is not
retried, throttles and outages are retried without alpaca-py's 3 s sleeps, and the keys (canaries here) never
appear in a message, a repr or a log line.
"""
from __future__ import annotations

import logging
import time

import pandas as pd
import pytest

from traderbot.core import ProviderError
from traderbot.data.providers.alpaca import AlpacaData
from traderbot.data.providers.base import ACTION_COLUMNS, BAR_COLUMNS, BarProvider
from traderbot.data.providers.finnhub import FinnhubProvider
from traderbot.fakes.alpaca import FakeAlpaca
from traderbot.fakes.finnhub import CANDLE_ROUTE, DIVIDEND_ROUTE, PROFILE_ROUTE, SPLIT_ROUTE, FakeFinnhub

KEY, SECRET, FH_KEY = "CANARY-KEY-0b7d41", "CANARY-SECRET-e19c5a", "CANARY-FINNHUB-4d2f88"   # must never show anywhere
BARS_ROUTE, ACTIONS_ROUTE = "GET /v2/stocks/bars", "GET /v1/corporate-actions"

BARS = {   # real sessions: a winter one (EST, bars stamped 05:00Z) and summer ones (EDT, 04:00Z)
    "AAPL": [("2024-01-05", 181.99, 182.76, 180.17, 181.18, 62303300), ("2024-06-07", 194.65, 196.94, 194.14, 196.89, 53103912),
             ("2024-06-10", 196.9, 197.3, 187.43, 193.12, 97262077)],
    "MSFT": [("2024-06-07", 426.2, 426.28, 423.0, 423.85, 13621700), ("2024-06-10", 424.7, 428.08, 423.89, 427.87, 14003000)],
}
ACTIONS = [
    {"type": "forward_split", "symbol": "NVDA", "ex_date": "2024-06-10", "new_rate": 10, "old_rate": 1},
    {"type": "reverse_split", "symbol": "MSFT", "ex_date": "2024-03-04", "new_rate": 1, "old_rate": 20},
    # processed (paid) after the window's end: Alpaca selects by process date, the frame is keyed by ex-date
    {"type": "cash_dividend", "symbol": "AAPL", "ex_date": "2024-06-28", "rate": 0.25, "process_date": "2024-07-15"},
    {"type": "cash_dividend", "symbol": "AAPL", "ex_date": "2024-05-10", "rate": 0.25, "process_date": "2024-05-16"},
    {"type": "cash_dividend", "symbol": "AAPL", "ex_date": "2023-12-28", "rate": 0.24, "process_date": "2024-01-03"},   # ex-date before the window
]


def utc(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def no_canary(*texts: str) -> None:
    for t in texts:
        for k in (KEY, SECRET, FH_KEY):
            assert k not in t, t


def raised(fn, *args) -> tuple[ProviderError, float]:
    "Call fn(*args) expecting a ProviderError; return it and the seconds taken."
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as info:
        fn(*args)
    return info.value, time.monotonic() - t0


# --- Alpaca ----------------------------------------------------------------------------------------------

@pytest.fixture
def alpaca_fake():
    with FakeAlpaca(KEY, SECRET, bars=BARS, corporate_actions=ACTIONS, page_size=1, feeds=("iex",), hang_s=3) as f:
        yield f


@pytest.fixture
def waits():
    return []


@pytest.fixture
def alpaca(alpaca_fake, waits):
    return AlpacaData(KEY, SECRET, url_override=alpaca_fake.url, timeout_s=0.5, retries=2, sleep=waits.append)


def test_alpaca_bars_round_trip_exactly_with_new_york_sessions_across_pages(alpaca_fake, alpaca):
    bars = alpaca.daily_bars(["MSFT", "AAPL"], "2024-01-01", "2024-06-10")
    assert alpaca_fake.count(BARS_ROUTE) == 5                            # one bar a page: alpaca-py followed the tokens
    expected = {(utc(d), s): [o, h, l, c, float(v)] for s, rows in BARS.items() for d, o, h, l, c, v in rows}
    assert {k: bars.loc[k, BAR_COLUMNS].tolist() for k in bars.index} == expected
    assert bars.index.get_level_values("timestamp").tz is not None
    assert (bars.index.get_level_values("timestamp") == bars.index.get_level_values("timestamp").normalize()).all()


def test_alpaca_bars_window_is_whole_new_york_days(alpaca):
    one = alpaca.daily_bars(["AAPL", "MSFT"], "2024-06-10", "2024-06-10")
    assert list(one.index) == [(utc("2024-06-10"), "AAPL"), (utc("2024-06-10"), "MSFT")]
    assert list(alpaca.daily_bars(["AAPL"], "2024-01-05", "2024-01-05").index) == [(utc("2024-01-05"), "AAPL")]   # a 05:00Z bar
    assert alpaca.daily_bars(["AAPL"], "2024-06-08", "2024-06-09").empty


def test_alpaca_asks_for_raw_bars_on_the_configured_feed(alpaca_fake, alpaca):
    # the fake refuses anything but raw 1Day bars, and 'sip' for these keys, so a success proves what was asked
    assert len(alpaca.daily_bars(["AAPL"], "2024-06-07", "2024-06-07")) == 1
    sip = AlpacaData(KEY, SECRET, feed="sip", url_override=alpaca_fake.url, retries=3, sleep=lambda s: pytest.fail("a 403 was retried"))
    e, _ = raised(sip.daily_bars, ["AAPL"], "2024-06-07", "2024-06-07")
    assert e.retryable is False and str(e).startswith("alpaca /v2/stocks/bars: HTTP 403")
    assert "subscription does not permit querying recent SIP data" in str(e) and "'sip' feed needs a paid data plan" in str(e)
    assert alpaca_fake.count(BARS_ROUTE) == 2


def test_alpaca_corporate_actions_round_trip_by_ex_date(alpaca_fake, alpaca):
    acts = alpaca.corporate_actions(["AAPL", "MSFT", "NVDA"], "2024-03-01", "2024-06-30")
    assert list(acts.columns) == ACTION_COLUMNS
    got = [(str(d.date()), s, k, r, c) for d, s, k, r, c in zip(acts.ex_date, acts.symbol, acts.kind, acts.ratio, acts.cash)]
    assert [g[:3] for g in got] == [("2024-03-04", "MSFT", "split"), ("2024-05-10", "AAPL", "dividend"),
                                   ("2024-06-10", "NVDA", "split"), ("2024-06-28", "AAPL", "dividend")]
    assert (acts.ratio.iat[0], acts.cash.iat[1], acts.ratio.iat[2], acts.cash.iat[3]) == (0.05, 0.25, 10.0, 0.25)
    assert alpaca_fake.count(ACTIONS_ROUTE) == 4                         # one action a page, four processed in the widened window


def test_alpaca_profiles_are_empty_and_it_is_a_bar_provider(alpaca):
    assert alpaca.profiles(["AAPL"]).empty and isinstance(alpaca, BarProvider) and alpaca.name == "alpaca"


@pytest.mark.parametrize("fault", ["http_429", "http_500", "http_504", "drop_connection"])
def test_alpaca_retries_throttles_and_outages_with_its_own_backoff(alpaca_fake, alpaca, waits, fault):
    alpaca_fake.inject(fault, BARS_ROUTE)
    t0 = time.monotonic()
    assert len(alpaca.daily_bars(["AAPL"], "2024-06-07", "2024-06-07")) == 1
    assert time.monotonic() - t0 < 2                                     # alpaca-py's 3 s resend sleep is off
    assert waits == [1.0] and alpaca_fake.count(BARS_ROUTE) == 2


def test_alpaca_gives_up_retryable_after_its_retries(alpaca_fake, alpaca, waits):
    for _ in range(3): alpaca_fake.inject("http_429", ACTIONS_ROUTE)
    e, took = raised(alpaca.corporate_actions, ["AAPL"], "2024-01-01", "2024-06-30")
    assert e.retryable is True and str(e).startswith("alpaca /v1/corporate-actions: HTTP 429") and "gave up after 3 tries" in str(e)
    assert waits == [1.0, 2.0] and alpaca_fake.count(ACTIONS_ROUTE) == 3 and took < 2


def test_alpaca_times_out_every_request(alpaca_fake, alpaca):
    alpaca_fake.inject("hang", BARS_ROUTE); alpaca_fake.inject("hang", BARS_ROUTE); alpaca_fake.inject("hang", BARS_ROUTE)
    e, took = raised(alpaca.daily_bars, ["AAPL"], "2024-06-07", "2024-06-07")
    assert e.retryable is True and "no answer within the timeout" in str(e)
    assert took < 2.5 and alpaca_fake.count(BARS_ROUTE) == 3


def test_alpaca_wrong_keys_are_refused_once_and_never_shown(alpaca_fake, caplog):
    caplog.set_level(logging.DEBUG)
    bad = AlpacaData(KEY, "CANARY-SECRET-wrong", url_override=alpaca_fake.url, retries=3, sleep=lambda s: pytest.fail("a 401 was retried"))
    e, _ = raised(bad.daily_bars, ["AAPL"], "2024-06-07", "2024-06-07")
    assert e.retryable is False and str(e).startswith("alpaca /v2/stocks/bars: HTTP 401") and "ALPACA_API_KEY" in str(e)
    assert alpaca_fake.count(BARS_ROUTE) == 1 and e.__cause__ is None
    no_canary(str(e), repr(e), repr(bad), caplog.text)
    assert "CANARY-SECRET-wrong" not in str(e) + repr(bad) + caplog.text


def test_fake_alpaca_trading_routes_still_answer_beside_market_data(alpaca_fake):
    import requests
    hdr = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
    assert requests.get(f"{alpaca_fake.url}/v2/account", headers=hdr, timeout=5).json()["cash"] == "100000"
    with pytest.raises(ValueError, match="unknown route"):
        alpaca_fake.inject("http_429", "GET /v2/stocks/quotes")


# --- Finnhub ---------------------------------------------------------------------------------------------

PROFILES = {"AAPL": "Technology", "XOM": {"finnhubIndustry": "Energy", "name": "Exxon Mobil Corp"}}
SPLITS = [{"symbol": "NVDA", "date": "2024-06-10", "fromFactor": 1, "toFactor": 10},
          {"symbol": "NVDA", "date": "2021-07-20", "fromFactor": 1, "toFactor": 4}]
DIVIDENDS = [{"symbol": "NVDA", "date": "2024-06-11", "amount": 0.01, "adjustedAmount": 0.01, "payDate": "2024-06-28",
              "recordDate": "2024-06-11", "declarationDate": "2024-05-22", "currency": "USD"}]
FREE_TIER = ("403: this endpoint needs a paid Finnhub plan (premium tier); use it for profiles, or another provider for bars")


@pytest.fixture
def finnhub_fake():
    with FakeFinnhub(FH_KEY, profiles=PROFILES, candles=BARS, splits=SPLITS, dividends=DIVIDENDS, hang_s=3) as f:
        yield f


@pytest.fixture
def finnhub(finnhub_fake, waits):
    return FinnhubProvider(FH_KEY, base_url=f"{finnhub_fake.url}/api/v1", timeout_s=0.5, retries=2, sleep=waits.append)


def test_finnhub_profiles_give_sectors_and_skip_unknown_symbols(finnhub_fake, finnhub):
    prof = finnhub.profiles(["AAPL", "XOM", "ZZZZ"])
    assert prof.to_dict("index") == {"AAPL": {"sector": "Technology", "industry": None}, "XOM": {"sector": "Energy", "industry": None}}
    assert finnhub_fake.count(PROFILE_ROUTE) == 3 and isinstance(finnhub, BarProvider) and finnhub.name == "finnhub"


@pytest.mark.parametrize("call, route", [("daily_bars", CANDLE_ROUTE), ("corporate_actions", SPLIT_ROUTE)])
def test_finnhub_free_key_is_told_the_endpoint_needs_the_premium_tier(finnhub_fake, finnhub, waits, call, route):
    e, _ = raised(getattr(finnhub, call), ["AAPL"], "2024-06-01", "2024-06-30")
    assert str(e) == f"finnhub {route.removeprefix('/api/v1')}: {FREE_TIER}"
    assert e.retryable is False and waits == [] and finnhub_fake.count(route) == 1


def test_finnhub_premium_candles_round_trip_exactly(finnhub_fake, finnhub):
    finnhub_fake.premium = True
    bars = finnhub.daily_bars(["AAPL", "MSFT"], "2024-01-01", "2024-06-10")
    expected = {(utc(d), s): [o, h, l, c, float(v)] for s, rows in BARS.items() for d, o, h, l, c, v in rows}
    assert {k: bars.loc[k, BAR_COLUMNS].tolist() for k in bars.index} == expected
    assert list(finnhub.daily_bars(["AAPL"], "2024-06-10", "2024-06-10").index) == [(utc("2024-06-10"), "AAPL")]
    assert finnhub.daily_bars(["AAPL", "ZZZZ"], "2024-06-08", "2024-06-09").empty      # no_data is empty, not an error


def test_finnhub_premium_splits_and_dividends_round_trip(finnhub_fake, finnhub):
    finnhub_fake.premium = True
    acts = finnhub.corporate_actions(["NVDA"], "2024-01-01", "2024-12-31")
    got = [(str(d.date()), s, k, r, c) for d, s, k, r, c in zip(acts.ex_date, acts.symbol, acts.kind, acts.ratio, acts.cash)]
    assert [g[:3] for g in got] == [("2024-06-10", "NVDA", "split"), ("2024-06-11", "NVDA", "dividend")]
    assert (acts.ratio.iat[0], acts.cash.iat[1]) == (10.0, 0.01)
    assert finnhub_fake.count(DIVIDEND_ROUTE) == 1


def test_finnhub_retries_the_api_limit_and_outages(finnhub_fake, finnhub, waits):
    finnhub_fake.inject("429"); finnhub_fake.inject("502")
    assert finnhub.profiles(["AAPL"]).sector.tolist() == ["Technology"]
    assert waits == [1.0, 2.0] and finnhub_fake.count(PROFILE_ROUTE) == 3
    finnhub_fake.inject("429", times=3)
    e, _ = raised(finnhub.profiles, ["AAPL"])
    assert e.retryable is True and "API limit reached" in str(e) and str(e).startswith("finnhub /stock/profile2: 429")


def test_finnhub_times_out_every_request(finnhub_fake, finnhub):
    finnhub_fake.inject("hang", times=3)
    e, took = raised(finnhub.profiles, ["AAPL"])
    assert e.retryable is True and took < 2.5 and finnhub_fake.count(PROFILE_ROUTE) == 3


def test_finnhub_wrong_key_is_refused_once_and_never_shown(finnhub_fake, caplog):
    caplog.set_level(logging.DEBUG)
    bad = FinnhubProvider("CANARY-FINNHUB-wrong", base_url=f"{finnhub_fake.url}/api/v1", retries=3, sleep=lambda s: pytest.fail("a 401 was retried"))
    e, _ = raised(bad.profiles, ["AAPL"])
    assert e.retryable is False and str(e).startswith("finnhub /stock/profile2: 401") and "Invalid API key" in str(e)
    assert finnhub_fake.count(PROFILE_ROUTE) == 1
    good = FinnhubProvider(FH_KEY, base_url=f"{finnhub_fake.url}/api/v1", retries=1, sleep=lambda s: None)
    finnhub_fake.inject("429", times=2)
    e2, _ = raised(good.profiles, ["AAPL"])
    # traderbot's own log lines only: httpx itself logs each request URL, token included, at INFO (see the report)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("traderbot"))
    assert "try 1 of 2" in ours
    no_canary(str(e), repr(bad), str(e2), repr(good), ours)
    assert "CANARY-FINNHUB-wrong" not in str(e) + repr(bad) + ours

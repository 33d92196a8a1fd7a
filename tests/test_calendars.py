"""Calendar clients (traderbot.news.calendars) against local fakes of Finnhub and Alpha Vantage, and into the store.

Each client must return exactly the fake's events in CALENDAR_COLUMNS (aware UTC times, None symbols for economic
rows), turn the Finnhub free-plan 403 and Alpha Vantage throttle notes into errors (never an empty frame), never
show its key, and give frames that `store_calendar_events` keeps once and `calendar_frame` reads back.
"""
from __future__ import annotations

import pandas as pd
import pytest

from traderbot.core import DataError, ProviderError
from traderbot.fakes.calendars import FakeAlphaVantageIndicators, FakeFinnhubCalendar
from traderbot.news.calendars import (CALENDAR_COLUMNS, ECONOMIC_TIER_MESSAGE, AlphaVantageIndicators, FinnhubEarnings, FinnhubEconomic)
from traderbot.store.database import open_store
from traderbot.store.news import calendar_frame, store_calendar_events

FH_KEY, AV_KEY = "fh-SECRET-789", "av-SECRET-456"
FAST = dict(rate=(1000, 1.0), sleep=lambda s: None)   # no client-side waiting in tests
UTC = lambda t: pd.Timestamp(t, tz="UTC")

EARNINGS = [{"date": "2024-01-24", "hour": "amc", "symbol": "IBM", "quarter": 4, "year": 2023, "epsEstimate": 2.78, "epsActual": 3.87,
             "revenueEstimate": 17.0e9, "revenueActual": 17.4e9},
            {"date": "2024-03-12", "hour": "bmo", "symbol": "ORCL", "quarter": 3, "year": 2024, "epsEstimate": 1.38, "epsActual": 1.41},
            {"date": "2024-06-11", "hour": "dmh", "symbol": "ORCL", "quarter": 4, "year": 2024, "epsEstimate": 1.65, "epsActual": None},
            {"date": "2024-11-20", "hour": "", "symbol": "NVDA", "quarter": 3, "year": 2025, "epsEstimate": 0.75, "epsActual": None}]
ECONOMIC = [{"actual": 0.3, "country": "US", "estimate": 0.2, "event": "CPI MM", "impact": "high", "prev": 0.1, "time": "2024-01-11 13:30:00", "unit": "%"},
            {"actual": 2.2, "country": "EU", "estimate": 2.1, "event": "ECB Rate", "impact": "High", "prev": 2.4, "time": "2024-06-06 12:15:00", "unit": "%"},
            {"actual": None, "country": "US", "estimate": 5.5, "event": "Fed Interest Rate Decision", "impact": "MEDIUM", "prev": 5.5,
             "time": "2024-06-12 18:00:00", "unit": "%"}]
SERIES = {"CPI": [("2023-12-01", "306.746"), ("2024-01-01", "308.417"), ("2024-02-01", ".")],
          "FEDERAL_FUNDS_RATE": [("2024-01-01", "5.33"), ("2024-02-01", "5.33")]}


@pytest.fixture
def finnhub():
    with FakeFinnhubCalendar(FH_KEY, EARNINGS, ECONOMIC) as fake: yield fake


@pytest.fixture
def alphavantage():
    with FakeAlphaVantageIndicators(AV_KEY, SERIES) as fake: yield fake


@pytest.fixture
def store(tmp_path):
    eng = open_store(f"sqlite:///{tmp_path / 'store.db'}")   # migrated to the newest schema
    try: yield eng
    finally: eng.dispose()


def earnings(fake):
    return FinnhubEarnings(FH_KEY, base_url=fake.url + "/api/v1", **FAST)


def economic(fake, **kw):
    return FinnhubEconomic(FH_KEY, base_url=fake.url + "/api/v1", **FAST, **kw)


def indicators(fake, names=("CPI", "FEDERAL_FUNDS_RATE")):
    return AlphaVantageIndicators(AV_KEY, base_url=fake.url, indicators=names, **FAST)


# ---------------------------------------------------------------- Finnhub earnings

def test_earnings_all_companies_in_one_call_at_new_york_times(finnhub):
    df = earnings(finnhub).events(None, "2024-01-01", "2024-12-31")
    assert finnhub.count() == 1 and list(df.columns) == CALENDAR_COLUMNS
    assert list(zip(df.symbol, df.name, df.event_at)) == [
        ("IBM", "earnings Q4 2023", UTC("2024-01-24 21:30")),    # amc 16:30 New York, winter (UTC-5)
        ("ORCL", "earnings Q3 2024", UTC("2024-03-12 12:00")),   # bmo 08:00, after the March DST switch (UTC-4)
        ("ORCL", "earnings Q4 2024", UTC("2024-06-11 16:00")),   # dmh 12:00, summer
        ("NVDA", "earnings Q3 2025", UTC("2024-11-20 14:30"))]   # unknown hour: 09:30, winter again
    assert set(df.kind) == {"earnings"} and set(df.importance) == {"high"} and set(df.provider) == {"finnhub"}
    assert df.details[0] == EARNINGS[0]


def test_earnings_per_symbol_and_window(finnhub):
    df = earnings(finnhub).events(["ORCL", "NVDA"], "2024-03-12 12:00", "2024-06-11")
    assert [q.get("symbol") for _, q in finnhub.queries] == ["ORCL", "NVDA"]
    assert all(q["from"] == "2024-03-12" and q["to"] == "2024-06-11" for _, q in finnhub.queries)
    assert df.name.tolist() == ["earnings Q3 2024", "earnings Q4 2024"]
    assert earnings(finnhub).events(["ORCL"], "2024-03-12 12:01", "2024-03-31").empty   # to the minute


def test_earnings_bad_row_names_provider_symbol_and_field(finnhub):
    from traderbot.fakes.polygon import FakeReply
    finnhub.push(FakeReply(200, {"earningsCalendar": [{"symbol": "IBM", "hour": "amc", "quarter": 4, "year": 2023}]}))
    with pytest.raises(DataError, match=r"finnhub /calendar/earnings: IBM: date None is not YYYY-MM-DD"):
        earnings(finnhub).events(None, "2024-01-01", "2024-01-31")


# ---------------------------------------------------------------- Finnhub economic

def test_economic_free_key_gets_one_line_plan_error(finnhub):
    with pytest.raises(ProviderError) as e: economic(finnhub, retries=3).events("2024-01-01", "2024-12-31")
    assert str(e.value) == ECONOMIC_TIER_MESSAGE and not e.value.retryable
    assert "paid Finnhub plan" in str(e.value) and "free plan" in str(e.value) and FH_KEY not in str(e.value)
    assert finnhub.count() == 1   # a plan refusal is not retried


def test_economic_premium_rows_filtered_to_countries(finnhub):
    finnhub.premium = True
    df = economic(finnhub).events("2024-01-01", "2024-12-31")
    assert list(zip(df.name, df.event_at, df.importance)) == [("CPI MM", UTC("2024-01-11 13:30"), "high"),
                                                              ("Fed Interest Rate Decision", UTC("2024-06-12 18:00"), "medium")]
    assert df.symbol.tolist() == [None, None] and set(df.kind) == {"economic"}
    assert economic(finnhub, countries=("us", "eu")).events("2024-06-01", "2024-06-30").name.tolist() == ["ECB Rate", "Fed Interest Rate Decision"]


# ---------------------------------------------------------------- Alpha Vantage indicators

def test_indicators_parse_filter_and_missing_values(alphavantage):
    df = indicators(alphavantage).events("2024-01-01", "2024-02-29")
    assert [q["function"] for _, q in alphavantage.queries] == ["CPI", "FEDERAL_FUNDS_RATE"]
    assert all(q["interval"] == "monthly" for _, q in alphavantage.queries)
    assert list(zip(df.name, df.event_at, [d["value"] for d in df.details])) == [
        ("CPI", UTC("2024-01-01"), 308.417), ("FEDERAL_FUNDS_RATE", UTC("2024-01-01"), 5.33),
        ("CPI", UTC("2024-02-01"), None), ("FEDERAL_FUNDS_RATE", UTC("2024-02-01"), 5.33)]
    assert df.details[0] == {"value": 308.417, "unit": "index 1982-1984=100", "interval": "monthly",
                             "title": "Consumer Price Index for all Urban Consumers"}
    assert df.symbol.tolist() == [None] * 4 and df.importance.tolist() == [None] * 4


def test_indicators_throttle_is_an_error_not_an_empty_frame(alphavantage):
    alphavantage.throttle_after = 1
    with pytest.raises(ProviderError, match=r"^alphavantage FEDERAL_FUNDS_RATE: throttled \(economic indicator\)") as e:
        indicators(alphavantage).events("2024-01-01", "2024-12-31")
    assert AV_KEY not in str(e.value) and AV_KEY not in repr(indicators(alphavantage))


def test_indicators_unknown_function_named(alphavantage):
    with pytest.raises(ProviderError, match="alphavantage RETAIL_SALES: economic indicator refused: Invalid API call"):
        indicators(alphavantage, ("CPI", "RETAIL_SALES")).events("2024-01-01", "2024-12-31")


# ---------------------------------------------------------------- into the store

def test_round_trip_into_the_store(finnhub, alphavantage, store):
    finnhub.premium = True
    frames = [earnings(finnhub).events(["IBM", "ORCL"], "2024-01-01", "2024-12-31"),
              economic(finnhub).events("2024-01-01", "2024-12-31"),
              indicators(alphavantage).events("2024-01-01", "2024-12-31")]
    counts = [len(f) for f in frames]
    assert counts == [3, 2, 4]
    assert [store_calendar_events(store, f) for f in frames] == counts
    assert [store_calendar_events(store, f) for f in frames] == [0, 0, 0]   # a re-fetch adds nothing
    back = calendar_frame(store)
    assert len(back) == sum(counts)
    assert list(pd.to_datetime(back.event_at, utc=True)) == sorted(t for f in frames for t in f.event_at)
    ibm = back[back.symbol == "IBM"].iloc[0]
    assert (ibm["name"], pd.Timestamp(ibm.event_at).tz_convert("UTC"), ibm.details["hour"]) == ("earnings Q4 2023", UTC("2024-01-24 21:30"), "amc")
    cpi = calendar_frame(store, kind="indicator").iloc[0]
    assert (cpi["name"], cpi.details["value"], pd.isna(cpi.symbol)) == ("CPI", 308.417, True)
    assert calendar_frame(store, kind="economic").name.tolist() == ["CPI MM", "Fed Interest Rate Decision"]


def test_pre_event_breaker_reduces_before_a_high_impact_release_and_lifts_after_it(tmp_path):
    """[breakers] pre_event_hours = 24 with a stored CPI release the morning after 2022-12-27: the daily run for the 27th
    moves the account to reducing (an alert says which event), so its opening buys are all denied; the run for the 28th,
    with the release behind it, moves it back to active by itself. A drawdown trip while the calendar holds the account
    in reducing keeps it there after the event (resume_after decides then)."""
    from traderbot.config import load_settings
    from traderbot.daily import check_breakers, resume_after_breakers, trade_daily
    from traderbot.data.sample import load_closes
    from traderbot.pipeline import ensure_run
    from traderbot.store import ledger

    url = f"sqlite:///{tmp_path/'store.db'}"
    cfg = load_settings(env={"TRADERBOT__STORE__URL": url, "TRADERBOT__BREAKERS__PRE_EVENT_HOURS": "24"})
    eng = open_store(url)
    store_calendar_events(eng, pd.DataFrame([
        dict(kind="economic", symbol=None, name="CPI MM", event_at=UTC("2022-12-28 13:30"), importance="high", provider="finnhub", details={}),
        dict(kind="economic", symbol=None, name="Pending Home Sales", event_at=UTC("2022-12-28 15:00"), importance="low", provider="finnhub", details={})]))
    px = load_closes()
    d27, d28 = UTC("2022-12-27"), UTC("2022-12-28")
    res = trade_daily(eng, cfg, px, d27, ensure_run(eng, "", "daily", {}))
    acct = ledger.account_id(eng, "default")
    assert ledger.trading_state(eng, acct) == "reducing"
    hist = ledger.trading_state_history(eng, acct)
    assert hist["actor"].iloc[-1] == "event calendar" and "CPI MM at 2022-12-28 13:30 UTC" in hist["reason"].iloc[-1]
    assert "Pending Home Sales" not in hist["reason"].iloc[-1]                        # low impact: not counted
    assert res.orders and all(o.status.value == "denied" for o in res.orders)        # reducing: a new account may not buy
    alerts = ledger.alerts_frame(eng, "default", limit=10)
    assert "calendar:pre_event" in alerts["source"].tolist()
    trade_daily(eng, cfg, px, d28, ensure_run(eng, "", "daily", {}))
    assert ledger.trading_state(eng, acct) == "active"
    assert ledger.trading_state_history(eng, acct)["actor"].iloc[-1] == "event calendar"

    # a real breaker trips while the calendar holds the account: the calendar no longer lifts it
    ledger.set_trading_state(eng, acct, "reducing", "event calendar", "pre_event: test")
    ledger.record_alert(eng, "warning", "breaker:drawdown", "drawdown: test", {"key": "breaker:drawdown:2022-12-28", "as_of": "2022-12-28"}, acct, None)
    checks = check_breakers(cfg, px, d28, pd.Series([1.0e6]), events=calendar_frame(eng, start=UTC("2022-12-29"), kind="economic"))
    assert [c.tripped for c in checks if c.breaker == "pre_event"] == [False]
    assert resume_after_breakers(eng, cfg, acct, px, d28, checks=checks) == "reducing"

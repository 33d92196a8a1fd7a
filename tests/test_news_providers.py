"""News adapters (traderbot.news.providers) against local fakes of Marketaux, Alpha Vantage, Finnhub and Polygon.

Each client must return exactly the fake's articles (ids, titles, UTC times, symbols with relevance and sentiment),
follow the provider's paging, turn quota and throttle answers into errors (never an empty frame), retry a 429,
and never show its key in an error, a repr or a log line.
"""
from __future__ import annotations
import logging

import pandas as pd
import pytest

from traderbot.core import DataError, ProviderError
from traderbot.fakes.news import FakeAlphaVantageNews, FakeArticle, FakeFinnhubNews, FakeMarketaux, FakePolygonNews
from traderbot.news.providers import (ARTICLE_COLUMNS, AlphaVantageNews, FinnhubNews, MarketauxNews, NewsSource, PolygonNews,
                                      articles_frame, canonical_url)

KEYS = {"marketaux": "mx-SECRET-123", "alphavantage": "av-SECRET-456", "finnhub": "fh-SECRET-789", "polygon": "pg-SECRET-000"}
FAST = dict(rate=(1000, 1.0), sleep=lambda s: None)   # no client-side waiting in tests
START, END = "2024-01-01", "2024-01-31"

# Seven articles: AAPL in all, MSFT in some; numeric ids so Finnhub's integer ids fit too.
ARTICLES = [FakeArticle(str(1000 + i), f"Headline {i}", f"https://news.example/story-{i}", f"2024-01-{2 + 3 * i:02d} {9 + i}:1{i}:0{i}",
                        {"AAPL": (round(0.9 - 0.1 * i, 3), round(-0.6 + 0.2 * i, 3)), **({"MSFT": (0.25, 0.5)} if i % 2 else {})},
                        summary=f"Summary {i}", source="wire.example")
            for i in range(7)]
OUTSIDE = FakeArticle("1999", "Too late", "https://news.example/late", "2024-02-02 10:00", {"AAPL": (0.5, 0.0)})


def expected(articles=ARTICLES):
    return [(a.title, a.time) for a in sorted(articles, key=lambda a: a.time)]


def got(df):
    assert list(df.columns) == ARTICLE_COLUMNS
    return list(zip(df.title, df.published_at))


def symbols_of(df, title):
    return {s["symbol"]: (s["relevance"], s["sentiment"]) for s in df.loc[df.title == title, "symbols"].iloc[0]}


def assert_no_key(text, provider):
    assert KEYS[provider] not in str(text)


# ---------------------------------------------------------------- shared pieces

def test_canonical_url_drops_tracking_fragment_and_trailing_slash():
    assert canonical_url("HTTPS://WWW.News.Example/Path/To/?utm_campaign=x&a=1&gclid=z&fbclid=y#frag") == "https://www.news.example/Path/To?a=1"
    assert canonical_url("https://n.example/a/") == canonical_url("https://n.example/a?utm_source=feed")


def test_articles_frame_checks_records():
    base = {"provider_id": "9", "url": "https://n.example/9", "title": "T", "published_at": "2024-01-02T10:00:00Z", "symbols": []}
    df = articles_frame([base], "p")
    assert df.published_at[0] == pd.Timestamp("2024-01-02 10:00", tz="UTC") and str(df.published_at.dtype) == "datetime64[ns, UTC]"
    with pytest.raises(DataError, match="p: article 9: bad published time"): articles_frame([{**base, "published_at": "not a time"}], "p")
    with pytest.raises(DataError, match="article 9: no url"): articles_frame([{**base, "url": None}], "p")
    with pytest.raises(DataError, match="relevance is not a number"):
        articles_frame([{**base, "symbols": [{"symbol": "AAPL", "relevance": "high"}]}], "p")


def test_every_client_is_a_news_source():
    for cls, key in [(MarketauxNews, "m"), (AlphaVantageNews, "a"), (FinnhubNews, "f"), (PolygonNews, "p")]:
        assert isinstance(cls(key), NewsSource)


def test_default_rates_are_the_free_tiers():
    assert MarketauxNews("k").client.limiter.calls == 100 and MarketauxNews("k").client.limiter.period_s == 86_400
    assert FinnhubNews("k").client.limiter.calls == 60 and PolygonNews("k").client.limiter.calls == 5
    assert AlphaVantageNews("k").max_requests == 25


# ---------------------------------------------------------------- Marketaux

@pytest.fixture
def marketaux():
    with FakeMarketaux(KEYS["marketaux"], ARTICLES + [OUTSIDE]) as fake: yield fake


def mx(fake, **kw): return MarketauxNews(KEYS["marketaux"], base_url=fake.url, **{**FAST, **kw})


def test_marketaux_returns_the_articles_over_pages(marketaux):
    df = mx(marketaux).news(["AAPL", "MSFT"], START, END)
    assert got(df) == expected()
    assert list(df.provider_id) == [a.id for a in ARTICLES] and set(df.provider) == {"marketaux"}
    assert symbols_of(df, "Headline 1") == {"AAPL": (0.8, -0.4), "MSFT": (0.25, 0.5)}
    assert marketaux.count() == 3   # 7 found, 3 a page
    q = marketaux.queries[0][1]
    assert (q["symbols"], q["published_after"], q["published_before"], q["limit"]) == ("AAPL,MSFT", "2024-01-01T00:00:00", "2024-01-31T23:59:59", "3")
    assert [q["page"] for _, q in marketaux.queries] == ["1", "2", "3"]


def test_marketaux_max_pages_caps_requests(marketaux):
    assert len(mx(marketaux, max_pages=2).news(["AAPL"], START, END)) == 6 and marketaux.count() == 2


def test_marketaux_quota_is_an_error_not_empty(marketaux):
    marketaux.inject("402")
    with pytest.raises(ProviderError, match="daily request quota") as e: mx(marketaux).news(["AAPL"], START, END)
    assert not e.value.retryable and marketaux.count() == 1
    assert_no_key(e.value, "marketaux")


def test_marketaux_retries_429(marketaux):
    marketaux.inject("429", times=2)
    assert got(mx(marketaux).news(["AAPL"], START, END)) == expected() and marketaux.count() == 5


def test_marketaux_wrong_token(marketaux):
    with pytest.raises(ProviderError, match="401") as e:
        MarketauxNews("wrong-token-XYZ", base_url=marketaux.url, **FAST).news(["AAPL"], START, END)
    assert "wrong-token-XYZ" not in str(e.value) and not e.value.retryable


# ---------------------------------------------------------------- Alpha Vantage

@pytest.fixture
def alphavantage():
    arts = [FakeArticle(a.url, a.title, a.url, a.published_at, a.symbols, a.summary, a.source) for a in ARTICLES + [OUTSIDE]]   # no ids: urls
    with FakeAlphaVantageNews(KEYS["alphavantage"], arts) as fake: yield fake


def av(fake, **kw): return AlphaVantageNews(KEYS["alphavantage"], base_url=fake.url, **{**FAST, **kw})


def test_alphavantage_returns_the_articles_one_ticker_at_a_time(alphavantage):
    df = av(alphavantage).news(["AAPL", "MSFT"], START, END)
    assert got(df) == expected()
    assert list(df.provider_id) == [canonical_url(a.url) for a in ARTICLES]
    assert symbols_of(df, "Headline 3") == {"AAPL": (0.6, 0.0), "MSFT": (0.25, 0.5)}   # strings in the JSON, floats here
    assert [q["tickers"] for _, q in alphavantage.queries] == ["AAPL", "MSFT"]
    q = alphavantage.queries[0][1]
    assert (q["time_from"], q["time_to"], q["sort"], q["limit"]) == ("20240101T0000", "20240131T2359", "EARLIEST", "1000")


def test_alphavantage_pages_by_time_window(alphavantage):
    df = av(alphavantage, limit=3).news(["AAPL"], START, END)
    assert got(df) == expected()
    froms = [q["time_from"] for _, q in alphavantage.queries]
    assert froms == ["20240101T0000", "20240108T1112", "20240114T1314", "20240120T1516"]   # each from the last item's minute


def test_alphavantage_throttle_is_a_retryable_error(alphavantage):
    alphavantage.inject("throttle")
    with pytest.raises(ProviderError, match="throttled") as e: av(alphavantage).news(["AAPL"], START, END)
    assert e.value.retryable and alphavantage.count() == 1
    alphavantage.inject("daily")
    with pytest.raises(ProviderError, match="25 requests per day"): av(alphavantage).news(["AAPL"], START, END)


def test_alphavantage_retries_429_and_refuses_a_bad_key(alphavantage):
    alphavantage.inject("429")
    assert got(av(alphavantage).news(["AAPL"], START, END)) == expected()
    with pytest.raises(ProviderError, match="API key was refused") as e:
        AlphaVantageNews("bad-key-QQQ", base_url=alphavantage.url, **FAST).news(["AAPL"], START, END)
    assert not e.value.retryable and "bad-key-QQQ" not in str(e.value)


def test_alphavantage_request_budget(alphavantage):
    with pytest.raises(ProviderError, match="max_requests=2"): av(alphavantage, limit=1, max_requests=2).news(["AAPL"], START, END)


# ---------------------------------------------------------------- Finnhub

@pytest.fixture
def finnhub():
    with FakeFinnhubNews(KEYS["finnhub"], ARTICLES + [OUTSIDE]) as fake: yield fake


def fh(fake, **kw): return FinnhubNews(KEYS["finnhub"], base_url=fake.url, **{**FAST, **kw})


def test_finnhub_returns_the_articles_per_symbol(finnhub):
    df = fh(finnhub).news(["AAPL", "MSFT"], START, END)
    assert got(df) == expected() and list(df.provider_id) == [a.id for a in ARTICLES]
    assert symbols_of(df, "Headline 1") == {"AAPL": (None, None), "MSFT": (None, None)}
    assert [(q["symbol"], q["from"], q["to"]) for _, q in finnhub.queries] == [("AAPL", "2024-01-01", "2024-01-30"), ("AAPL", "2024-01-31", "2024-01-31"),
                                                                            ("MSFT", "2024-01-01", "2024-01-30"), ("MSFT", "2024-01-31", "2024-01-31")]


def test_finnhub_trims_to_the_exact_window(finnhub):
    df = fh(finnhub).news(["AAPL"], "2024-01-02 09:10:01", "2024-01-05 10:11:01")   # articles 0 and 1 sit at these times
    assert list(df.title) == ["Headline 1"]


def test_finnhub_retries_429_and_names_a_bad_key(finnhub):
    finnhub.inject("429")
    assert got(fh(finnhub).news(["AAPL"], START, END)) == expected()
    with pytest.raises(ProviderError, match="401.*Invalid API key") as e:
        FinnhubNews("nope-KEY", base_url=finnhub.url, **FAST).news(["AAPL"], START, END)
    assert "nope-KEY" not in str(e.value)


def test_finnhub_hang_is_a_retryable_timeout():
    with FakeFinnhubNews(KEYS["finnhub"], ARTICLES, hang_s=2) as fake:
        fake.inject("hang")
        with pytest.raises(ProviderError, match="no answer within") as e: fh(fake, timeout_s=0.2, retries=0).news(["AAPL"], START, END)
    assert e.value.retryable


# ---------------------------------------------------------------- Polygon

@pytest.fixture
def polygon():
    with FakePolygonNews(KEYS["polygon"], ARTICLES + [OUTSIDE], page_size=3) as fake: yield fake


def pg(fake, **kw): return PolygonNews(KEYS["polygon"], base_url=fake.url, **{**FAST, **kw})


def test_polygon_follows_next_url_with_the_key(polygon):
    df = pg(polygon).news(["AAPL"], START, END)
    assert got(df) == expected() and list(df.provider_id) == [a.id for a in ARTICLES]
    assert symbols_of(df, "Headline 0") == {"AAPL": (None, -1.0)}
    assert symbols_of(df, "Headline 3") == {"AAPL": (None, 0.0), "MSFT": (None, 1.0)}
    assert polygon.count("/v2/reference/news") == 3
    assert all(q.get("apiKey") == KEYS["polygon"] for _, q in polygon.queries)
    q = polygon.queries[0][1]
    assert (q["ticker"], q["published_utc.gte"], q["published_utc.lte"], q["order"]) == ("AAPL", "2024-01-01T00:00:00Z", "2024-01-31T23:59:59Z", "asc")


def test_polygon_merges_an_article_found_under_two_tickers(polygon):
    df = pg(polygon).news(["AAPL", "MSFT"], START, END)
    assert len(df) == len(ARTICLES) and df.provider_id.is_unique


def test_polygon_retries_429_and_refuses_a_bad_key(polygon):
    polygon.inject("429")
    assert got(pg(polygon).news(["AAPL"], START, END)) == expected()
    with pytest.raises(ProviderError, match="Unknown API Key") as e: PolygonNews("bad-PG-key", base_url=polygon.url, **FAST).news(["AAPL"], START, END)
    assert "bad-PG-key" not in str(e.value)


# ---------------------------------------------------------------- keys

def test_keys_never_show_in_reprs_errors_or_logs(caplog, marketaux, alphavantage, finnhub, polygon):
    caplog.set_level(logging.DEBUG)
    clients = {"marketaux": mx(marketaux, retries=1), "alphavantage": av(alphavantage, retries=1), "finnhub": fh(finnhub, retries=1),
               "polygon": pg(polygon, retries=1)}
    for name, fake in [("marketaux", marketaux), ("alphavantage", alphavantage), ("finnhub", finnhub), ("polygon", polygon)]:
        fake.inject("503" if name in ("marketaux", "alphavantage", "polygon") else "502", times=2)
        with pytest.raises(ProviderError) as e: clients[name].news(["AAPL"], START, END)
        assert e.value.retryable
        assert_no_key(e.value, name)
        assert_no_key(repr(clients[name]), name)
    assert caplog.records and not any(k in r.getMessage() for r in caplog.records for k in KEYS.values())

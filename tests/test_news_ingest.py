"""`traderbot ingest` with news and calendars switched on, against local fakes of Polygon, Finnhub and Finnhub's calendars.

The real command in a subprocess: bars from files, then the stories of the fetched symbols from two providers (one
story from both is stored once, with both views), scored by the offline default; then the earnings calendar stored,
while the economic calendar's free-plan 403 becomes an alert and leaves the ingest succeeded. No key reaches the report.
"""
from __future__ import annotations
from pathlib import Path

from traderbot.fakes.calendars import FakeFinnhubCalendar
from traderbot.fakes.news import FakeArticle, FakeFinnhubNews, FakePolygonNews
from traderbot.store import database, ledger
from traderbot.store.news import calendar_frame, news_frame, sentiment_frame

from test_market import DAY, environment, files_from_sample, run

PK, FK = "pk-CANARY-4411", "fk-CANARY-8822"


def test_ingest_fetches_stores_and_scores_news_and_calendars(tmp_path):
    files = files_from_sample(tmp_path / "files", ["AAPL", "MSFT"])
    beat = dict(title="Apple beats estimates and raises its dividend", published_at="2022-12-27 14:30", summary="Record services revenue.")
    polygon = [FakeArticle("p1", url="https://www.example.com/apple-beats?utm_source=polygon", symbols={"AAPL": (None, 1.0)}, **beat),
               FakeArticle("p2", title="Microsoft shares plunge after a weak cloud forecast", url="https://news.example/msft-plunge",
                           published_at="2022-12-28 22:10", symbols={"MSFT": (None, -1.0)})]
    finnhub = [FakeArticle("101", url="https://www.example.com/apple-beats", symbols={"AAPL": (None, None)}, **beat),
               FakeArticle("102", title="Apple faces a lawsuit over battery claims", url="https://news.example/aapl-suit",
                           published_at="2022-12-26 16:00", symbols={"AAPL": (None, None)})]
    earnings = [dict(date="2023-01-05", hour="amc", symbol="AAPL", quarter=1, year=2023, epsEstimate=1.94),
                dict(date="2023-03-01", hour="bmo", symbol="AAPL", quarter=2, year=2023)]              # beyond lookahead_days
    with FakePolygonNews(PK, polygon) as fp, FakeFinnhubNews(FK, finnhub) as ff, FakeFinnhubCalendar(FK, earnings, [], premium=False) as fc:
        env, url = environment(tmp_path, data__source="lake", data__lake=tmp_path / "lake", data__benchmark="SPY",
                               news__providers="polygon finnhub", news__base_urls=f"polygon={fp.url} finnhub={ff.url}",
                               calendar__earnings="finnhub", calendar__economic="finnhub", calendar__base_urls=f"finnhub={fc.url}/api/v1")
        env.update(POLYGON_API_KEY=PK, FINNHUB_API_KEY=FK)
        r = run(env, "ingest", "--provider", "files", "--path", str(files), "--as-of", DAY)
        reports = sorted((tmp_path / "reports" / "ingest").glob("*.html"))     # the successful run's report, before the refused run writes its own
        missing = run({k: v for k, v in env.items() if k != "FINNHUB_API_KEY"}, "ingest", "--provider", "files", "--path", str(files), "--as-of", DAY)
    assert r.returncode == 0, r.stderr
    eng = database.connect(url)
    stories = news_frame(eng)
    assert sorted(stories.title) == ["Apple beats estimates and raises its dividend", "Apple faces a lawsuit over battery claims",
                                     "Microsoft shares plunge after a weak cloud forecast"]
    assert stories.set_index("title").loc["Apple beats estimates and raises its dividend", "providers"] == "finnhub,polygon"
    scored = sentiment_frame(eng, "vader+finance").merge(stories[["article_id", "title"]], on="article_id").set_index("title")["label"]
    assert scored["Apple beats estimates and raises its dividend"] == "positive" and scored["Microsoft shares plunge after a weak cloud forecast"] == "negative"
    cal = calendar_frame(eng)
    assert cal[["kind", "symbol", "name"]].values.tolist() == [["earnings", "AAPL", "earnings Q1 2023"]]
    alerts = ledger.alerts_frame(eng, None, limit=10)
    assert any(s == "calendar" and "paid Finnhub plan" in m for s, m in zip(alerts.source, alerts.message)), alerts
    assert len(reports) == 1, reports
    html = reports[0].read_text()
    assert "3 new stories, 1 copies merged" in html and "calendars: earnings 1 (1 new); failed: economic" in html, html[-3000:]
    assert PK not in html and FK not in html and PK not in r.stdout + r.stderr and FK not in r.stdout + r.stderr
    assert missing.returncode == 1 and "it needs FINNHUB_API_KEY in the environment" in missing.stderr, missing.stderr

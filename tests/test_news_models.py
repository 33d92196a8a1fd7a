"""End-to-end: news and alternative data as model inputs, from the store to an order's rationale.

The train pipeline (papermill, a subprocess) fits on price features plus the news features of the stories in the store
and an alternative-data file; the registry keeps the scorer and the file with the model; the daily pipeline rebuilds the
same features from them and every signal's stored rationale says what the model read: the symbol's stories at the signal
session and its alternative-data value.
"""
import numpy as np
import pandas as pd

from traderbot.config import load_settings
from traderbot.data.sample import load_closes
from traderbot.news.features import first_session
from traderbot.store import database
from traderbot.store.news import record_sentiment, store_articles, store_calendar_events, unscored_articles

from test_pipeline import environment, table_rows, traderbot

SYMBOLS = ["AAPL", "MSFT", "XOM", "JPM", "KO", "PG", "UNH", "AMD"]


def stories(n=1200, seed=5):
    "Random stories about SYMBOLS in 2016-2022, with distinct titles and a score each."
    rng = np.random.default_rng(seed)
    times = pd.DatetimeIndex(rng.choice(pd.date_range("2016-01-04", "2022-12-27 20:00", freq="17min", tz="UTC"), n, replace=False)).sort_values()
    syms = rng.choice(SYMBOLS, n)
    rows = pd.DataFrame([dict(provider="polygon", provider_id=f"n{i}", url=f"https://news.example.com/{i}", title=f"story {i} on {s} ref {i * 7919}",
                              summary="", source=["Reuters", "Bloomberg", "Dow Jones"][i % 3], published_at=t, symbols=[{"symbol": s}])
                         for i, (s, t) in enumerate(zip(syms, times))])
    return rows, pd.Series(rng.uniform(-1, 1, n).round(3), index=rows["title"])


def test_a_model_trained_on_news_and_alt_data_trades_and_says_what_it_read(tmp_path):
    env, url, tmp = environment(tmp_path)
    alt = tmp / "alt"; alt.mkdir()
    months = pd.date_range("2015-01-01", "2022-12-01", freq="MS")
    rng = np.random.default_rng(2)
    pd.DataFrame([dict(symbol=s, published_at=f"{m:%Y-%m-%d}T12:00:00Z", value=round(float(rng.uniform(20, 80)), 2)) for s in SYMBOLS for m in months]
                 ).to_csv(alt / "esg.csv", index=False)
    env = {**env, "TRADERBOT__MODELS__ARTEFACT_DIR": str(tmp / "models"), "TRADERBOT__MODELS__NEWS_FEATURES": "true",
           "TRADERBOT__MODELS__ALT_DATA": str(alt), "TRADERBOT__DATA__UNIVERSE": " ".join(SYMBOLS),
           # promotion bars opened for this test only: the mechanism is what is tested, not the model's edge
           "TRADERBOT__MODELS__MIN_DEFLATED_SHARPE": "0", "TRADERBOT__MODELS__MAX_ACCURACY_PVALUE": "1", "TRADERBOT__MODELS__MAX_PBO": "1"}
    cfg = load_settings(env=env)
    eng = database.open_store(url)
    rows, scores = stories()
    store_articles(eng, rows)
    todo = unscored_articles(eng, "vader+finance")
    sc = todo["title"].map(scores).to_numpy(float)
    record_sentiment(eng, "vader+finance", todo[["article_id"]].assign(label=np.where(sc > 0, "positive", "negative"), score=sc))

    r = traderbot(env, "run", "train", "-p", "models=baseline", "-p", "start=2016-06-01", "-p", "min_train=1000", "-p", "candidate=baseline", timeout=600)
    assert r.returncode == 0, r.stderr
    html = next((tmp / "reports" / "train").glob("*.html")).read_text()
    assert "news: 1,200 stories scored by vader+finance on 8 symbols" in html and "alternative data from" in html
    assert "News impact" in html and "story-symbol events kept" in html and "Dow Jones" in html   # the event study by source
    (v,) = table_rows(url, "model_versions")
    assert v["features"][-4:] == ["news_count", "news_sentiment", "news_sentiment_decayed", "alt_esg"]
    assert v["parameters"]["news_scorer"] == "vader+finance" and v["parameters"]["alt_data"] == str(alt)

    r = traderbot(env, "models", "promote", "direction", v["version"][:10])
    assert r.returncode == 0, r.stderr
    store_calendar_events(eng, pd.DataFrame([    # the daily report lists what is ahead of the session's close
        dict(kind="economic", symbol=None, name="Initial Jobless Claims", event_at=pd.Timestamp("2022-12-29 13:30", tz="UTC"), importance="medium", provider="finnhub", details={}),
        dict(kind="earnings", symbol="AAPL", name="earnings Q1 2023", event_at=pd.Timestamp("2023-01-02 21:30", tz="UTC"), importance="high", provider="finnhub", details={}),
        dict(kind="earnings", symbol="AAPL", name="earnings Q4 2022", event_at=pd.Timestamp("2022-10-27 20:30", tz="UTC"), importance="high", provider="finnhub", details={})]))
    r = traderbot(env, "run", "daily", "-p", "as_of=2022-12-28")
    assert r.returncode == 0, r.stderr
    daily = next((tmp / "reports" / "daily").glob("*.html")).read_text()
    assert "Events ahead" in daily and "Initial Jobless Claims" in daily and "2022-12-29 08:30 EST" in daily and "earnings Q1 2023" in daily
    assert "earnings Q4 2022" not in daily                                      # behind the session: not ahead
    sig = table_rows(url, "signals")
    assert sig
    signal = pd.Timestamp("2022-12-27", tz="UTC")
    on_signal = rows.assign(session=first_session(rows["published_at"]))
    on_signal = on_signal[on_signal["session"] == signal]
    for s in sig:
        sym = s["symbol"]
        count = sum(sym in [x["symbol"] for x in syms] for syms in on_signal["symbols"])
        assert f"news on 2022-12-27: {count} stories" in s["rationale"], s["rationale"]
        assert "alt_esg " in s["rationale"] and f"model direction {v['version'][:12]}" in s["rationale"]

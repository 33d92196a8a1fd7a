"""The calendar-aware scheduler (traderbot.schedule) against a temp SQLite store, with a fake pipeline runner that records
its calls: due times from the exchange calendar (close + delay, holidays, early closes, DST), each (job, session) once
across calls and restarts, catch-up in order with the rest skipped under one alert, a failed ingest skipping its daily,
one scheduler at a time, and the service stopping on request."""
import os, threading, time
from pathlib import Path

import pandas as pd
import pytest

from traderbot.config import load_settings
from traderbot.core import ConfigError, StorageError
from traderbot.pipeline import PipelineFailed, RunOutcome
from traderbot.schedule import SCHEDULE_LOCK, Due, JobResult, due_jobs, job_times, next_jobs, run_once, serve
from traderbot.store import runs
from traderbot.store.runs import last_job_runs, record_job_run
from traderbot.store.database import open_store
from traderbot.store.ledger import alerts_frame


def ET(s): return pd.Timestamp(s, tz="America/New_York").tz_convert("UTC")
def D(s): return pd.Timestamp(s, tz="UTC")


@pytest.fixture
def make(tmp_path):
    "make(**schedule) -> (settings, engine): a settings.ini with that [schedule] section and a fresh store."
    def build(**schedule):
        keys = "\n".join(f"{k} = {v}" for k, v in schedule.items())
        (tmp_path / "settings.ini").write_text(f"[store]\nurl = sqlite:///{tmp_path}/s.db\n[schedule]\n{keys}\n")
        cfg = load_settings(tmp_path / "settings.ini", env={})
        return cfg, open_store(cfg.store.url)
    return build


class FakeRun:
    "Stands in for run_pipeline: records (pipeline, date) per call; the pairs in `fail` raise PipelineFailed."
    def __init__(self, fail=()): self.calls, self.fail, self.parameters = [], set(fail), []
    def __call__(self, settings, name, parameters, settings_path=None):
        self.parameters.append((name, dict(parameters)))
        self.calls.append((name, next(iter(parameters.values()))))
        run_id = f"{name}-{len(self.calls)}"
        if self.calls[-1] in self.fail: raise PipelineFailed(f"run {run_id} failed: cell 3: DataError: no bars\n  notebook: x", run_id)
        return RunOutcome(run_id, "succeeded", Path("x.ipynb"), Path("x.html"), 0.1, None)


def test_a_normal_day_ingest_at_close_plus_30_then_daily(make):
    cfg, eng = make(jobs="ingest daily")
    fake = FakeRun()
    assert [d.session for d in due_jobs(cfg, eng, ET("2024-06-07 16:29"))] == [D("2024-06-06")]   # first start: latest due only
    assert fake.calls == [] and run_once(cfg, eng, ET("2024-06-07 16:29:59"), fake) and fake.calls == [("ingest", "2024-06-06"), ("daily", "2024-06-06")]
    assert run_once(cfg, eng, ET("2024-06-07 16:30"), fake) == [JobResult("ingest", D("2024-06-07"), "succeeded", "ingest-3")]
    assert run_once(cfg, eng, ET("2024-06-07 16:44"), fake) == []                    # daily not before close + 45 min
    assert [r.job for r in run_once(cfg, eng, ET("2024-06-07 16:45"), fake)] == ["daily"]
    assert fake.parameters[-2:] == [("ingest", {"as_of": "2024-06-07"}), ("daily", {"as_of": "2024-06-07"})]


def test_a_holiday_has_nothing_due(make):
    cfg, eng = make(jobs="ingest daily")
    fake = FakeRun()
    run_once(cfg, eng, ET("2024-07-03 17:00"), fake)
    assert fake.calls == [("ingest", "2024-07-03"), ("daily", "2024-07-03")]
    assert run_once(cfg, eng, ET("2024-07-04 23:59"), fake) == []
    assert due_jobs(cfg, eng, ET("2024-07-05 16:29")) == []
    assert D("2024-07-04") not in job_times(cfg, "ingest", "2024-07-01", "2024-07-05").index


def test_an_early_close_moves_the_jobs_forward(make):
    cfg, eng = make(jobs="ingest daily")
    run_once(cfg, eng, ET("2024-11-27 17:00"), FakeRun())
    assert due_jobs(cfg, eng, ET("2024-11-29 13:29")) == []
    assert due_jobs(cfg, eng, ET("2024-11-29 13:30")) == [Due("ingest", D("2024-11-29"), ET("2024-11-29 13:30"))]


@pytest.mark.parametrize("before, after, utc_before, utc_after", [
    ("2024-03-08", "2024-03-11", "21:30", "20:30"),      # clocks forward on 2024-03-10
    ("2024-11-01", "2024-11-04", "20:30", "21:30")])     # and back on 2024-11-03
def test_daylight_saving_shifts_due_times_in_utc_by_an_hour(make, before, after, utc_before, utc_after):
    cfg, eng = make()
    times = job_times(cfg, "ingest", before, after)
    assert list(times.index) == [D(before), D(after)]
    assert [f"{t:%H:%M}" for t in times] == [utc_before, utc_after]
    assert [f"{t.tz_convert('America/New_York'):%H:%M}" for t in times] == ["16:30", "16:30"]


def test_each_job_runs_once_per_session_across_calls_and_restarts(make):
    cfg, eng = make(jobs="ingest daily")
    fake = FakeRun()
    run_once(cfg, eng, ET("2024-06-07 17:00"), fake)
    assert run_once(cfg, eng, ET("2024-06-07 17:00"), fake) == []
    eng.dispose()
    assert run_once(cfg, open_store(cfg.store.url), ET("2024-06-08 10:00"), fake) == []
    assert fake.calls == [("ingest", "2024-06-07"), ("daily", "2024-06-07")]
    assert record_job_run(open_store(cfg.store.url), "ingest", D("2024-06-07"), "running") is None


def test_catch_up_runs_the_latest_oldest_first_and_skips_the_rest_with_one_alert(make):
    cfg, eng = make(jobs="ingest", catch_up=5)
    fake = FakeRun()
    run_once(cfg, eng, ET("2024-05-31 17:00"), fake)
    fake.calls.clear()
    out = run_once(cfg, eng, ET("2024-06-12 17:00"), fake)                       # down for 8 sessions: 06-03 .. 06-12
    assert fake.calls == [("ingest", d) for d in ("2024-06-06", "2024-06-07", "2024-06-10", "2024-06-11", "2024-06-12")]
    skipped = [r for r in out if r.status == "skipped"]
    assert [r.session for r in skipped] == [D("2024-06-03"), D("2024-06-04"), D("2024-06-05")]
    assert {r.error for r in skipped} == {"missed; beyond catch_up=5"}
    al = alerts_frame(eng)
    assert len(al) == 1 and al.level.iloc[0] == "warning"
    assert "missed 3 job(s) from 2024-06-03 to 2024-06-05" in al.message.iloc[0]


def test_a_failed_ingest_skips_its_daily_with_the_reason_and_an_alert(make):
    cfg, eng = make(jobs="ingest daily")
    fake = FakeRun(fail={("ingest", "2024-06-07")})
    run_once(cfg, eng, ET("2024-06-06 17:00"), fake)
    out = run_once(cfg, eng, ET("2024-06-07 17:00"), fake)
    assert out == [JobResult("ingest", D("2024-06-07"), "failed", "ingest-3", "run ingest-3 failed: cell 3: DataError: no bars"),
                   JobResult("daily", D("2024-06-07"), "skipped", None, "its dependency ingest failed for 2024-06-07")]
    assert ("daily", "2024-06-07") not in fake.calls
    rows = last_job_runs(eng).set_index("job")
    assert rows.loc["daily", "status"] == "skipped" and rows.loc["ingest", "run_id"] == "ingest-3"
    assert sorted(alerts_frame(eng).level) == ["critical", "warning"]
    assert alerts_frame(eng).message.iloc[0] == "scheduled daily for 2024-06-07 skipped: its dependency ingest failed for 2024-06-07"


def test_a_refusal_is_recorded_failed_and_the_next_job_still_runs(make):
    cfg, eng = make(jobs="ingest daily")
    def refuse(settings, name, parameters, settings_path=None):
        if name == "ingest": raise ConfigError("[ingest] provider: no API key")
        return RunOutcome("daily-1", "succeeded", Path("x"), Path("y"), 0.1, None)
    out = run_once(cfg, eng, ET("2024-06-07 17:00"), refuse)
    assert out == [JobResult("ingest", D("2024-06-07"), "failed", None, "ConfigError: [ingest] provider: no API key"),
                   JobResult("daily", D("2024-06-07"), "skipped", None, "its dependency ingest failed for 2024-06-07")]


def test_weekly_training_is_keyed_by_the_last_session_of_the_week(make):
    cfg, eng = make(jobs="train")
    fake = FakeRun()
    run_once(cfg, eng, ET("2024-03-22 17:00"), fake)
    assert run_once(cfg, eng, ET("2024-03-27 17:00"), fake) == []
    run_once(cfg, eng, ET("2024-03-28 17:00"), fake)                             # Good Friday 2024-03-29: Thursday's close
    assert fake.parameters == [("train", {"end": "2024-03-22"}), ("train", {"end": "2024-03-28"})]


def test_a_second_scheduler_is_refused_naming_the_holder(make):
    cfg, eng = make()
    runs.acquire_lock(eng, SCHEDULE_LOCK, "schedule-elsewhere")
    with pytest.raises(StorageError, match=f"another scheduler is running: process {os.getpid()} on "):
        run_once(cfg, eng, ET("2024-06-07 17:00"), FakeRun())
    runs.release_lock(eng, SCHEDULE_LOCK, "schedule-elsewhere")
    assert len(run_once(cfg, eng, ET("2024-06-07 17:00"), FakeRun())) == 2


def test_a_job_left_running_by_a_dead_scheduler_is_settled_failed(make):
    cfg, eng = make(jobs="ingest")
    record_job_run(eng, "ingest", D("2024-06-07"), "running")
    fake = FakeRun()
    assert run_once(cfg, eng, ET("2024-06-07 17:00"), fake) == []
    assert fake.calls == []
    assert last_job_runs(eng).status.tolist() == ["failed"]
    assert "left running" in alerts_frame(eng).message.iloc[0]


def test_serve_runs_due_jobs_and_stops_on_request(make):
    cfg, eng = make(jobs="ingest daily")
    fake, stop, lines, done = FakeRun(), threading.Event(), [], []
    th = threading.Thread(target=lambda: done.append(serve(cfg, poll_s=0.05, stop=stop, now=ET("2024-06-07 17:00"), run=fake,
                                                           engine=eng, echo=lines.append)))
    th.start()
    deadline = time.monotonic() + 10
    while len(fake.calls) < 2 and time.monotonic() < deadline: time.sleep(0.02)
    with pytest.raises(StorageError, match="another scheduler is running"):
        run_once(cfg, eng, ET("2024-06-07 17:00"), fake)
    stop.set(); th.join(5)
    assert not th.is_alive()
    assert fake.calls == [("ingest", "2024-06-07"), ("daily", "2024-06-07")]
    assert [r.job for r in done[0]] == ["ingest", "daily"]
    assert lines[-1] == "traderbot schedule: stopped after 2 job(s)"
    assert runs.lock_holder(eng, SCHEDULE_LOCK) is None


def test_next_jobs_lists_the_coming_jobs_in_utc_and_exchange_time(make):
    cfg, eng = make(jobs="ingest daily")
    run_once(cfg, eng, ET("2024-06-06 17:00"), FakeRun())
    nx = next_jobs(cfg, eng, ET("2024-06-07 12:00"), n=3)
    assert list(zip(nx.job, nx.session.astype(str))) == [("ingest", "2024-06-07"), ("daily", "2024-06-07"), ("ingest", "2024-06-10")]
    assert nx["at"].iloc[0] == ET("2024-06-07 16:30") and str(nx["at"].dt.tz) == "UTC"
    assert nx.at_local.iloc[2] == pd.Timestamp("2024-06-10 16:30", tz="America/New_York")


def test_alerts_are_delivered_after_each_job_and_a_delivery_failure_never_stops_the_scheduler(make, monkeypatch):
    import traderbot.schedule as sched
    cfg, eng = make(jobs="ingest daily")
    calls = []
    def broken(engine, settings): calls.append(len(alerts_frame(engine))); raise OSError("webhook down")
    monkeypatch.setattr(sched, "deliver_pending", broken)
    out = run_once(cfg, eng, ET("2024-06-07 17:00"), FakeRun(fail={("ingest", "2024-06-07")}))
    assert [r.status for r in out] == ["failed", "skipped"]
    assert calls == [1, 2, 2]          # after the failed ingest, after the skipped daily, and at the end

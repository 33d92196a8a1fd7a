"""Shared pytest fixtures for traderbot's process-, server- and browser-level suites.

Generic fixtures (any test file may use them):

- `pg_url` (session): a URL to a throwaway PostgreSQL database. `TRADERBOT_TEST_PG_URL` wins if set (its
  database name must contain 'test': `store_url` wipes it);
  otherwise a private cluster is initialised in a temp dir, started on a free loopback port and torn
  down at the end of the session. No PostgreSQL binaries -> the test is skipped, unless
  `TRADERBOT_REQUIRE_PG=1` (CI), where it fails loudly instead.
- `store_url`: parametrized over sqlite and postgresql; a fresh, empty database per test (PostgreSQL: the
  `pg_url` database with schema `public` dropped and recreated; tests using it must not run in parallel
  within one session - pytest-xdist workers each get their own `pg_url` cluster).
- `engine`: `traderbot.store.database.open_store(store_url)`: the migrated store, disposed at teardown.

Tests that only need files use pytest's own `tmp_path`.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_ENV_URL = "TRADERBOT_TEST_PG_URL"
PG_REQUIRED_ENV = "TRADERBOT_REQUIRE_PG"
PG_TEST_DB = "traderbot_test"


def pytest_configure(config):
    config.addinivalue_line("markers", "postgresql: runs against a real PostgreSQL server (deselect with -m 'not postgresql')")


# ---------------------------------------------------------------------------------------------------------
# A throwaway PostgreSQL cluster
# ---------------------------------------------------------------------------------------------------------

def _pg_unavailable(reason: str):
    "Skip, or fail when the environment says PostgreSQL is required (CI)."
    if os.environ.get(PG_REQUIRED_ENV, "").strip() == "1":
        pytest.fail(f"PostgreSQL is required ({PG_REQUIRED_ENV}=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason} (set {PG_ENV_URL} to use an existing server)")


def _version_key(path: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def find_pg_bindir() -> Path | None:
    "A directory holding initdb and pg_ctl: `pg_config --bindir`, then /usr/lib/postgresql/*/bin, then PATH."
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cluster_parent(as_root: bool) -> str | None:
    "Where the throwaway cluster lives: RAM (/dev/shm) when roomy, else /tmp when root, else the default temp dir."
    try:
        if os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > 2 << 30:
            return "/dev/shm"
    except OSError:
        pass
    return "/tmp" if as_root else None   # not pytest's tmp dirs: they are 0700 root, closed to the postgres user


class PgCluster:
    "A private PostgreSQL cluster in a temp dir, run as the `postgres` user when we are root."

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_root = hasattr(os, "geteuid") and os.geteuid() == 0
        if self.as_root:
            import pwd
            pw = pwd.getpwnam("postgres")   # KeyError: no postgres user to run the server as
        self.base = Path(tempfile.mkdtemp(prefix="traderbot-pg-", dir=_cluster_parent(self.as_root)))
        self.data, self.sock, self.log = self.base / "data", self.base / "sock", self.base / "server.log"
        self.port: int | None = None
        self.started = False
        if self.as_root:
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self.sock.mkdir()
        if self.as_root:
            os.chown(self.sock, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.base,
                             env={**os.environ, "LC_ALL": "C", "LANG": "C"})
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n{self.server_log()}")
        return res

    def server_log(self) -> str:
        try:
            return "server log:\n" + self.log.read_text()[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--no-locale", "--no-sync")
        last: Exception | None = None
        for _ in range(3):   # a free port can be taken between probing and binding; try another
            self.port = _free_port()
            opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
                self.started = True
                return
            except RuntimeError as e:
                last = e
        raise RuntimeError(f"could not start PostgreSQL: {last}")

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)
                self.started = False
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _admin_connect(url: str, dbname: str | None = None):
    "An autocommit psycopg connection to the server behind SQLAlchemy URL `url`."
    import psycopg
    import sqlalchemy as sa
    u = sa.make_url(url)
    return psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                           dbname=dbname or u.database, autocommit=True, connect_timeout=10)


@pytest.fixture(scope="session")
def pg_url():
    "URL (postgresql+psycopg://...) of a throwaway PostgreSQL database for this test session."
    if url := os.environ.get(PG_ENV_URL):
        import sqlalchemy as sa
        if "test" not in (sa.make_url(url).database or ""):   # store_url wipes it: never point it at real data
            pytest.fail(f"{PG_ENV_URL} must name a database with 'test' in its name: tests drop its schema public", pytrace=False)
        yield url
        return
    bindir = find_pg_bindir()
    if bindir is None:
        _pg_unavailable("no initdb/pg_ctl found (pg_config --bindir, /usr/lib/postgresql/*/bin, PATH)")
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if is_root and not shutil.which("runuser"):
        _pg_unavailable("running as root and `runuser` is missing (initdb refuses to run as root)")
    try:
        cluster = PgCluster(bindir)
    except KeyError:
        _pg_unavailable("running as root and there is no `postgres` system user to run the server as")
    try:
        cluster.start()
        with _admin_connect(f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/postgres") as con:
            con.execute(f'CREATE DATABASE "{PG_TEST_DB}"')
    except Exception:
        cluster.stop()
        raise
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/{PG_TEST_DB}"
    finally:
        cluster.stop()


def reset_pg_database(url: str) -> None:
    """Empty the database behind `url`: end its other sessions, then drop and recreate schema `public`.

    Much faster than CREATE DATABASE per test (~1 ms against ~350 ms) and it leaves the database exactly as
    a fresh one: no tables, no sequences, no `alembic_version`."""
    with _admin_connect(url) as con:
        con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()")
        con.execute("DROP SCHEMA IF EXISTS public CASCADE")
        con.execute("CREATE SCHEMA public")


# ---------------------------------------------------------------------------------------------------------
# The store on both backends
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def store_url(request, tmp_path):
    "A fresh, empty (un-migrated) database: a new SQLite file under tmp_path, or the session's PostgreSQL database emptied."
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_url")
        reset_pg_database(url)
        yield url


@pytest.fixture
def engine(store_url):
    "The migrated store behind `store_url`."
    from traderbot.store.database import open_store
    eng = open_store(store_url)
    try:
        yield eng
    finally:
        eng.dispose()

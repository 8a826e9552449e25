"""A throwaway PostgreSQL 15 cluster for end-to-end tests (the Python twin of
src/store/pg_test_cluster.cc).

The cluster lives in a temporary directory, listens on a Unix socket only, and runs as the
`postgres` user when the test runs as root (PostgreSQL refuses to run as root). Every command is
bounded in time; a missing binary is an AssertionError (tests never skip).

    pg = PgCluster(tmp / "pg")
    url = pg.start()            # postgresql:///sigil?host=...&user=postgres
    pg.crash()                  # SIGKILL the postmaster (an unclean stop; recovery on start)
    pg.restart()
    pg.stop()
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

PG_BINDIR = Path(os.environ.get("SIGIL_PG_BINDIR", "/usr/lib/postgresql/15/bin"))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class PgCluster:
    def __init__(self, dir: Path, bindir: Path = PG_BINDIR) -> None:
        self.dir, self.bindir = Path(dir), Path(bindir)
        self.data = self.dir / "data"
        self.as_postgres = os.geteuid() == 0
        self.running = False

    # -- plumbing ------------------------------------------------------------------------

    def _demote(self) -> None:
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    def run(self, argv: list[str], timeout: float = 60, check: bool = True,
            capture: bool = False) -> subprocess.CompletedProcess:
        """Runs a PostgreSQL tool from the cluster's bindir as the cluster's user."""
        log = self.dir / "pg_cmd.log"
        with open(log, "ab") as out:
            r = subprocess.run([str(self.bindir / argv[0]), *argv[1:]],
                               stdout=subprocess.PIPE if capture else out,
                               stderr=out, stdin=subprocess.DEVNULL, preexec_fn=self._demote,
                               timeout=timeout, cwd=self.dir,
                               env={"PATH": "/usr/bin:/bin", "LC_ALL": "C",
                                    "HOME": str(self.dir)})
        if check and r.returncode != 0:
            raise AssertionError(f"PostgreSQL: {argv[0]} failed ({r.returncode}):\n{_tail(log)}")
        return r

    def url(self, database: str = "sigil") -> str:
        return f"postgresql:///{database}?host={self.dir}&user=postgres"

    def _options(self) -> str:
        return (f"-k {self.dir} -c listen_addresses='' -c shared_buffers=64MB "
                "-c max_connections=200 -c fsync=on")

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, database: str = "sigil") -> str:
        """initdb + start + createdb; returns the store URL of `database`."""
        for tool in ("initdb", "pg_ctl", "createdb", "psql"):
            if not os.access(self.bindir / tool, os.X_OK):
                raise AssertionError(f"{self.bindir / tool} is missing (apt install "
                                     "postgresql-15; scripts/setup.sh does)")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.run(["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "-N"], 120)
        self._pg_ctl_start()
        self.createdb(database)
        return self.url(database)

    def _pg_ctl_start(self) -> None:
        self.run(["pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-t", "60", "-o", self._options(), "start"], 90)
        self.running = True

    def createdb(self, database: str) -> None:
        self.run(["createdb", "-h", str(self.dir), "-U", "postgres", database], 60)

    def psql(self, sql: str, database: str = "sigil") -> str:
        r = self.run(["psql", "-h", str(self.dir), "-U", "postgres", "-d", database, "-At",
                      "-v", "ON_ERROR_STOP=1", "-c", sql], 60, capture=True)
        return r.stdout.decode()

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def crash(self) -> None:
        """SIGKILL the postmaster and its backends: the next start runs crash recovery."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.running = False

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self.running = False
            self.run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"], 90,
                     check=False)

    def restart(self) -> None:
        """Starts the cluster again (after stop() or crash()). Backends orphaned by a crash exit
        once they notice the postmaster is gone; until then the old shared memory is in use and
        the start fails, so it is retried for up to 30 s."""
        if self.running:
            self.stop()
        deadline = time.monotonic() + 30
        while True:
            try:
                self._pg_ctl_start()
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

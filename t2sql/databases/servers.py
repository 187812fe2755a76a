"""Temporary PostgreSQL and MariaDB servers on 127.0.0.1, for tests and benchmarks.

    with TemporaryPostgres() as pg:          # initdb in a fresh folder, a free port, stopped at the end
        load_sqlite("x.sqlite", pg.url("x"), create=True)

Each server gets its own data folder, listens only on 127.0.0.1 (and a socket in its folder), and
is stopped and deleted on exit. PostgreSQL refuses to run as root: as root, ``initdb`` and the
server run as the ``postgres`` system user through ``runuser``. The account's password is random
and only ever put into URLs given to callers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Where Debian's packages put the server programs.
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class ServerUnavailable(RuntimeError):
    """The server program is not installed; the message says which and how to install it."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log is not None and log.is_file() else ""
    raise RuntimeError(f"the server did not open port {port} within {timeout_s:g} s\n{tail}")


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (newest version), or None."""
    found = sorted(Path("/").glob(POSTGRES_BIN_GLOB.lstrip("/")), key=lambda p: p.parent.name)
    for folder in reversed(found):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def mariadb_bin() -> Path | None:
    """The MariaDB server program (``mariadbd``), or None."""
    for name in ("mariadbd", "mysqld"):
        path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").is_file() else None)
        if path:
            return Path(path)
    return None


class TemporaryPostgres:
    """A PostgreSQL server in a temporary folder on 127.0.0.1 with a superuser ``t2sql``.

    Raises:
        ServerUnavailable: PostgreSQL is not installed (``apt-get install postgresql``).
    """

    user = "t2sql"

    def __init__(self) -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise ServerUnavailable("PostgreSQL is not installed: apt-get install -y postgresql")
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.dir: Path | None = None
        self._as: list[str] = []

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> "TemporaryPostgres":
        """initdb, then start the server and wait until it accepts connections."""
        self.dir = Path(tempfile.mkdtemp(prefix="t2sql-pg-"))
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable("running as root needs the 'postgres' system user (apt-get install "
                                        "postgresql creates it)") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        os.chmod(pwfile, 0o600)
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", self.user, "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
        pwfile.unlink()
        self.port = free_port()
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                f"-c fsync=off -c full_page_writes=off -c max_connections=40 -c shared_buffers=32MB")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(self.dir / "log"),
                  "-o", opts, "start")
        _wait_port(self.port, 30, log=self.dir / "log")
        return self

    def url(self, database: str = "postgres", *, with_password: bool = True) -> str:
        """``postgresql+psycopg://t2sql:<password>@127.0.0.1:<port>/<database>``."""
        auth = f"{self.user}:{self.password}" if with_password else self.user
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def alive(self) -> bool:
        """Whether the server still accepts connections."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        if self.dir is None:
            return
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-w", "-m", "immediate", "stop")
        except (subprocess.SubprocessError, OSError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "TemporaryPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class TemporaryMariaDB:
    """A MariaDB server in a temporary folder on 127.0.0.1 with an all-privileges user ``t2sql``.

    Raises:
        ServerUnavailable: MariaDB is not installed (``apt-get install mariadb-server``).
    """

    user = "t2sql"

    def __init__(self) -> None:
        self.bin = mariadb_bin()
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if self.bin is None or install is None:
            raise ServerUnavailable("MariaDB is not installed: apt-get install -y mariadb-server")
        self.install = install
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> "TemporaryMariaDB":
        """mariadb-install-db, then start the server and create the ``t2sql`` account."""
        import pymysql

        self.dir = Path(tempfile.mkdtemp(prefix="t2sql-maria-"))
        data = self.dir / "data"
        user = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run([self.install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", *user], check=True, capture_output=True, timeout=180)
        self.port = free_port()
        sock = self.dir / "mysqld.sock"
        log = self.dir / "error.log"
        self.proc = subprocess.Popen(
            [str(self.bin), "--no-defaults", f"--datadir={data}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={sock}", f"--pid-file={self.dir / 'mysqld.pid'}", f"--log-error={log}", "--skip-networking=0",
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M", "--skip-name-resolve",
             "--max-connections=40", *user], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, 60, self.proc, log)
        conn = pymysql.connect(unix_socket=str(sock), user="root", password="", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute("CREATE USER 't2sql'@'127.0.0.1' IDENTIFIED BY %s", (self.password,))
                cur.execute("GRANT ALL PRIVILEGES ON *.* TO 't2sql'@'127.0.0.1' WITH GRANT OPTION")
        finally:
            conn.close()
        return self

    def url(self, database: str = "mysql", *, with_password: bool = True) -> str:
        """``mysql+pymysql://t2sql:<password>@127.0.0.1:<port>/<database>``."""
        auth = f"{self.user}:{self.password}" if with_password else self.user
        return f"mysql+pymysql://{auth}@127.0.0.1:{self.port}/{database}"

    def alive(self) -> bool:
        """Whether the server process runs and accepts connections."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server and delete its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "TemporaryMariaDB":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

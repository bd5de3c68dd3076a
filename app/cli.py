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

from gan_core import cli as engine_cli

log = logging.getLogger("ganforge")


def _die_with_parent() -> None:
    """In the worker child: get SIGTERM when serve exits, however it exits (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: serve's own shutdown path still stops the child


def serve_command(args: argparse.Namespace) -> int:
    """Run the API; in embedded mode (no broker URL) also run one worker as a child process."""
    import uvicorn

    from app.api.main import create_app
    from app.core.db import migrate
    from app.core.settings import get_settings

    settings = get_settings()
    host = args.host or settings.host
    port = args.port or settings.port
    migrate(settings.resolved_database_url)  # once, before the worker child and the API start
    child = None
    if settings.embedded:
        log.warning("embedded mode: SQLite at %s, store at %s, one local worker",
                    settings.resolved_database_url, settings.resolved_store_dir)
        child = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=os.environ.copy(),
                                 preexec_fn=_die_with_parent)
    else:
        log.warning("fleet mode: API only; run workers with `ganforge worker`")
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    finally:
        if child is not None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def worker_command(args: argparse.Namespace) -> int:
    """Run a Celery worker on the training queue, one training at a time."""
    from app.core.db import migrate
    from app.core.settings import get_settings

    settings = get_settings()
    migrate(settings.resolved_database_url)
    from worker.celery_app import app

    argv = [
        "worker",
        "--queues", settings.queue,
        "--concurrency", "1",  # one training per worker (per GPU)
        "--pool", "prefork",  # training runs in a child; the parent keeps the broker link
        "--loglevel", args.loglevel,
        "--hostname", args.hostname or f"ganforge-{os.getpid()}@%h",
        "--without-gossip", "--without-mingle",
    ]
    app.worker_main(argv=argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganforge", description="Train GANs and sample from them.")
    sub = parser.add_subparsers(dest="command", required=True)
    engine_cli.register(sub)

    s = sub.add_parser("serve", help="run the HTTP API (embedded mode: with its own worker)")
    s.add_argument("--host", default=None, help="default GANFORGE_HOST (127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="default GANFORGE_PORT (8000)")
    s.set_defaults(func=serve_command)

    w = sub.add_parser("worker", help="run a training worker (Celery)")
    w.add_argument("--loglevel", default="INFO")
    w.add_argument("--hostname", default=None, help="Celery node name")
    w.set_defaults(func=worker_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""How `ganforge serve` and `ganforge worker` log: quiet by default, everything on request.

At the default level (GANFORGE_LOG_LEVEL=INFO) a start shows ganforge's own lines, the web
server's (the address it listens on) and the worker's ready line; the libraries' start-up
chatter is held back: Alembic's INFO lines (plugins set up, the migration context, each
revision applied), Celery's banner, its running-as-root warning (the queue accepts JSON only,
so it does not apply) and kombu's "no hostname" warning for the embedded broker folder.
Warnings and errors from every library still show. ``--verbose`` (= GANFORGE_LOG_LEVEL=DEBUG)
shows all of it, and ganforge's debug lines.
"""

from __future__ import annotations

import logging
import warnings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CHATTER = ("alembic",)  # INFO at every start, nothing an operator acts on
WIRE = ("botocore", "boto3", "s3transfer", "urllib3", "httpcore", "PIL", "multipart", "asyncio")
ROOT_WARNING = "You're running the worker with superuser privileges"
NO_HOSTNAME = "No hostname was supplied"


class _Drop(logging.Filter):
    """Drops records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def verbose(level: str) -> bool:
    return level.upper() == "DEBUG"


def configure(level: str) -> None:
    """Log at ``level`` (one of LEVELS), quiet unless it is DEBUG."""
    level = level.upper()
    logging.basicConfig(level=level, format=FORMAT, force=True)
    if verbose(level):
        for name in WIRE:  # every request's bytes: not what `--verbose` is asked for
            logging.getLogger(name).setLevel(logging.INFO)
        return
    for name in CHATTER:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("kombu.connection").addFilter(_Drop(NO_HOSTNAME))
    warnings.filterwarnings("ignore", message=ROOT_WARNING)

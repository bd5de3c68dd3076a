"""``ganforge-client jobs | datasets | samples | translate | translations``: a ganforge server
from the command line.

Each verb is a call of ganforge_client.Client, over HTTP. The same verbs are ``ganforge jobs
...`` of the server's command (app/cli.py registers them). The server is GANFORGE_URL (or
--url) and the key GANFORGE_KEY (or --key). ``--json`` prints the API's JSON (an object, or an
array for a list); otherwise short human output. Exit codes: 0 done, 1 a watched job did not
succeed or an image of a translated folder was refused, 2 a usage error, an API error or an
unreachable server. Imports of httpx, tqdm and the client happen inside the commands, so the
server's other verbs do not pay for them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganforge_client import translation_verbs, verbs

if TYPE_CHECKING:
    from ganforge_client import Client

Handler = Callable[["Client", argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction, prog: str = "ganforge") -> None:
    """Add the remote verbs (jobs, datasets, samples, translate, translations) to a parent
    parser; ``prog`` is the command the hints it prints name."""
    common = argparse.ArgumentParser(add_help=False)
    remote = common.add_argument_group("server")
    remote.add_argument(
        "--url", default=None, help="the server (default: $GANFORGE_URL or http://127.0.0.1:8000)"
    )
    remote.add_argument(
        "--key",
        default=None,
        help="API key (default: $GANFORGE_KEY, which is better: a key on the command line "
        "is visible to other users in `ps`)",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON, for scripts")

    def verb(parent: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=help)
        p.set_defaults(func=lambda args: _run(handler, args), prog=prog)
        return p

    jobs = subparsers.add_parser("jobs", help="training jobs on a ganforge server (HTTP)")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="VERB")
    p = verb(jsub, "create", verbs.jobs_create, "queue a training job")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set one config field (a JSON value, or a bare string), e.g. --set steps=2000",
    )
    p.add_argument("--name", default=None, help="the job's name")
    p.add_argument("--idempotency-key", default=None, help="resending with it returns one job")
    p = verb(jsub, "list", verbs.jobs_list, "list jobs, newest first")
    p.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "canceled"], default=None
    )
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default 20)")
    for name, handler, text in [
        ("show", verbs.jobs_show, "show one job"),
        ("watch", verbs.jobs_watch, "follow a job until it ends (exit 0 only if it succeeded)"),
        ("cancel", verbs.jobs_cancel, "stop a job (a running one keeps a checkpoint)"),
        ("delete", verbs.jobs_delete, "delete a job that is not running, with its checkpoints"),
    ]:
        verb(jsub, name, handler, text).add_argument("id", metavar="JOB")
    p = verb(
        jsub,
        "resume",
        verbs.jobs_resume,
        "continue a failed or canceled job, or train a succeeded one longer (--steps above its total)",
    )
    p.add_argument("id", metavar="JOB")
    p.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help="new total step count (for a succeeded job: above its total)",
    )

    datasets = subparsers.add_parser("datasets", help="datasets on a ganforge server (HTTP)")
    dsub = datasets.add_subparsers(dest="datasets_command", required=True, metavar="VERB")
    p = verb(
        dsub,
        "upload",
        verbs.datasets_upload,
        "upload a .zip of images, of pairs (A/ + B/, AB/) or of two domains, or an .npz",
    )
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--name", default=None, help="dataset name (default: the file's name)")
    p.add_argument(
        "--pairing",
        choices=("auto", "paired", "unpaired"),
        default=None,
        help="how A/ and B/ folders are read: paired by file name, two unpaired domains, or "
        "auto (paired when every name has its partner; the server's default)",
    )
    verb(dsub, "list", verbs.datasets_list, "uploads and built-ins")
    verb(dsub, "show", verbs.datasets_show, "show one upload").add_argument("id", metavar="DATASET")
    verb(dsub, "delete", verbs.datasets_delete, "delete an upload").add_argument(
        "id", metavar="DATASET"
    )

    p = verb(
        subparsers, "samples", verbs.samples, "write a PNG grid sampled from a job's checkpoint"
    )
    p.add_argument("id", metavar="JOB")
    p.add_argument(
        "--checkpoint", default="latest", metavar="REF", help="latest (default), best, or an id"
    )
    p.add_argument("--n", type=int, default=None, help="images (server default 64)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--nrow", type=int, default=None, help="images per row (server default 8)")
    p.add_argument("--label", type=int, default=None, help="class id (conditional models)")
    p.add_argument("--ema", choices=["auto", "true", "false"], default=None)
    p.add_argument("--truncation", type=float, default=None)
    p.add_argument("-o", "--output", required=True, help="PNG file to write ('-': stdout)")

    p = verb(
        subparsers,
        "translate",
        translation_verbs.translate,
        "translate an image, or every .png/.jpg/.jpeg of a folder, with a translation job's "
        "checkpoint (exit 1 if any image of a folder was refused)",
    )
    p.add_argument("id", metavar="JOB")
    p.add_argument("input", type=Path, metavar="INPUT", help="an image file, or a folder of them")
    p.add_argument(
        "--checkpoint", default="latest", metavar="REF", help="latest (default), best, or an id"
    )
    p.add_argument(
        "--direction",
        choices=("a2b", "b2a"),
        default=None,
        help="a2b (the server's default) or b2a (unpaired models only)",
    )
    p.add_argument("--ema", choices=["auto", "true", "false"], default=None)
    p.add_argument(
        "-o",
        "--out",
        "--output",
        dest="output",
        default=None,
        metavar="PATH",
        help="for a file: the PNG to write ('-': stdout; a folder: STEM.png in it; default "
        "STEM-translated.png here); for a folder: the folder to write STEM.png files to "
        "(required, not the input folder)",
    )

    p = verb(
        subparsers,
        "translations",
        translation_verbs.translations,
        "write a PNG grid of a translation job's held-out inputs and their translations",
    )
    p.add_argument("id", metavar="JOB")
    p.add_argument(
        "--checkpoint", default="latest", metavar="REF", help="latest (default), best, or an id"
    )
    p.add_argument("--n", type=int, default=None, help="validation images (server default 8)")
    p.add_argument("--direction", choices=("a2b", "b2a"), default=None, help="b2a: unpaired only")
    p.add_argument("--ema", choices=["auto", "true", "false"], default=None)
    p.add_argument(
        "-o",
        "--out",
        "--output",
        dest="output",
        required=True,
        metavar="FILE",
        help="PNG file to write ('-': stdout)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganforge-client", description="A ganforge server from the command line (HTTP)."
    )
    register(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"),
        prog="ganforge-client",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """The ``ganforge-client`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _run(handler: Handler, args: argparse.Namespace) -> int:
    """Run one verb with a client; API and connection errors become a message and exit 2."""
    from ganforge_client import ApiError, Client, ConnectionFailed, RateLimited, Unauthorized

    for name in ("httpx", "httpcore"):  # their INFO lines are noise on a terminal
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with Client(args.url, args.key) as client:
            return handler(client, args)
    except ApiError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        if exc.field:
            print(f"  field: {exc.field}", file=sys.stderr)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            print(f"  retry after {exc.retry_after:.0f} s", file=sys.stderr)
        if isinstance(exc, Unauthorized):
            print("  set GANFORGE_KEY to an API key of this server", file=sys.stderr)
        return 2
    except ConnectionFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("  is the server running? set GANFORGE_URL or --url", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

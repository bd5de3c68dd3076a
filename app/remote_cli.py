"""``ganforge jobs | datasets | samples``: a ganforge server from the command line, over HTTP.

Each verb is a call of app.client.Client. The server is GANFORGE_URL (or --url) and the key
GANFORGE_KEY (or --key). ``--json`` prints the API's JSON (an object, or an array for a
list); otherwise short human output. Exit codes: 0 done, 1 a watched job did not succeed,
2 a usage error, an API error or an unreachable server. Imports of httpx, tqdm and the
client happen inside the commands, so other ``ganforge`` verbs do not pay for them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import remote_output as show

if TYPE_CHECKING:
    from app.client import Client

Handler = Callable[["Client", argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the remote verbs (jobs, datasets, samples) to a parent parser."""
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
        p.set_defaults(func=lambda args: _run(handler, args))
        return p

    jobs = subparsers.add_parser("jobs", help="training jobs on a ganforge server (HTTP)")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="VERB")
    p = verb(jsub, "create", _jobs_create, "queue a training job")
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
    p = verb(jsub, "list", _jobs_list, "list jobs, newest first")
    p.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "canceled"], default=None
    )
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default 20)")
    for name, handler, text in [
        ("show", _jobs_show, "show one job"),
        ("watch", _jobs_watch, "follow a job until it ends (exit 0 only if it succeeded)"),
        ("cancel", _jobs_cancel, "stop a job (a running one keeps a checkpoint)"),
        ("delete", _jobs_delete, "delete a job that is not running, with its checkpoints"),
    ]:
        verb(jsub, name, handler, text).add_argument("id", metavar="JOB")
    p = verb(jsub, "resume", _jobs_resume, "continue a failed or canceled job")
    p.add_argument("id", metavar="JOB")
    p.add_argument("--steps", type=_positive, default=None, help="new total step count")

    datasets = subparsers.add_parser("datasets", help="datasets on a ganforge server (HTTP)")
    dsub = datasets.add_subparsers(dest="datasets_command", required=True, metavar="VERB")
    p = verb(dsub, "upload", _datasets_upload, "upload a .zip of images or an .npz")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--name", default=None, help="dataset name (default: the file's name)")
    verb(dsub, "list", _datasets_list, "uploads and built-ins")
    verb(dsub, "show", _datasets_show, "show one upload").add_argument("id", metavar="DATASET")
    verb(dsub, "delete", _datasets_delete, "delete an upload").add_argument("id", metavar="DATASET")

    p = verb(subparsers, "samples", _samples, "write a PNG grid sampled from a job's checkpoint")
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _run(handler: Handler, args: argparse.Namespace) -> int:
    """Run one verb with a client; API and connection errors become a message and exit 2."""
    from app.client import ApiError, Client, ConnectionFailed, RateLimited, Unauthorized

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


# -- jobs -------------------------------------------------------------------------------------


def _jobs_create(client: Client, args: argparse.Namespace) -> int:
    from gan_core.cli import _parse_overrides

    config: Any = {}
    if args.config is not None:
        try:
            config = json.loads(args.config.read_text())
        except (OSError, ValueError) as exc:
            print(f"error: cannot read {args.config}: {exc}", file=sys.stderr)
            return 2
        if not isinstance(config, dict):
            print(f"error: {args.config} must hold a JSON object", file=sys.stderr)
            return 2
    try:
        config |= _parse_overrides(args.set)
    except SystemExit as exc:  # its message for a pair without '='
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job = client.create_job(config, name=args.name, idempotency_key=args.idempotency_key)
    if args.json:
        show.print_json(job.api_json())
    else:
        print(f"{job.status} {job.id} ({job.name}): {job.progress.total_steps} steps")
        print(f"follow it with: ganforge jobs watch {job.id}")
    return 0


def _jobs_list(client: Client, args: argparse.Namespace) -> int:
    import itertools

    page_size = min(args.limit, 100)  # the API's largest page
    jobs = list(itertools.islice(client.list_jobs(status=args.status, limit=page_size), args.limit))
    if args.json:
        show.print_json([j.api_json() for j in jobs])
        return 0
    rows = [
        [
            j.id,
            j.name,
            j.status,
            f"{j.progress.step}/{j.progress.total_steps}",
            show.when(j.created_at),
        ]
        for j in jobs
    ]
    show.table(rows, ["ID", "NAME", "STATUS", "STEP", "CREATED (UTC)"])
    return 0


def _jobs_show(client: Client, args: argparse.Namespace) -> int:
    job = client.get_job(args.id)
    if args.json:
        show.print_json(job.api_json())
    else:
        show.show_job(job)
    return 0


def _jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel_job(args.id)
    if args.json:
        show.print_json(job.api_json())
    elif job.status == "canceled":
        print(f"canceled {job.id}")
    else:
        print(f"cancel requested for {job.id} ({job.status}); it stops at its next check")
    return 0


def _jobs_resume(client: Client, args: argparse.Namespace) -> int:
    job = client.resume_job(args.id, steps=args.steps)
    if args.json:
        show.print_json(job.api_json())
    else:
        print(f"{job.status} {job.id}: from step {job.progress.step} to {job.progress.total_steps}")
    return 0


def _jobs_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_job(args.id)
    if args.json:
        show.print_json({"id": args.id, "deleted": True})
    else:
        print(f"deleted {args.id}")
    return 0


def _jobs_watch(client: Client, args: argparse.Namespace) -> int:
    job = client.get_job(args.id)  # a 404 before anything is drawn
    if args.json:
        job = client.wait(args.id)
        show.print_json(job.api_json())
        return 0 if job.status == "succeeded" else 1
    view: show.Bar | show.Lines = show.Bar(job) if sys.stdout.isatty() else show.Lines(job)
    try:
        with client.events(args.id) as events:
            for event in events:
                if event.event == "job":
                    job = event.job or job
                    view.job(job)
                elif event.event == "checkpoint" and event.checkpoint is not None:
                    view.checkpoint(event.checkpoint)
                elif event.event == "deleted":
                    view.close()
                    print(f"{args.id} was deleted", file=sys.stderr)
                    return 1
    finally:
        view.close()
    if not job.finished:
        job = client.get_job(args.id)
    p = job.progress
    print(f"{job.id} {job.status} at step {p.step}/{p.total_steps}")
    if job.error:
        print(f"error: {job.error}", file=sys.stderr)
    return 0 if job.status == "succeeded" else 1


# -- datasets and samples ---------------------------------------------------------------------


def _datasets_upload(client: Client, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"error: {args.file} is not a file", file=sys.stderr)
        return 2
    bar = None
    if sys.stdout.isatty() and not args.json:
        from tqdm import tqdm

        bar = tqdm(
            total=args.file.stat().st_size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=args.file.name,
            file=sys.stdout,
            dynamic_ncols=True,
        )

    def progress(sent: int, total: int) -> None:
        if bar is not None:
            bar.update(sent - bar.n)

    try:
        ds = client.upload_dataset(args.file, name=args.name, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        show.print_json(ds.api_json())
    else:
        print(f"uploaded {ds.id} ({ds.name}, {ds.kind}): {show.dataset_line(ds)}")
        print(f"train on it with: ganforge jobs create --set dataset={ds.id} --set image_size=...")
    return 0


def _datasets_list(client: Client, args: argparse.Namespace) -> int:
    items = client.list_datasets()
    if args.json:
        show.print_json([d.api_json() for d in items])
        return 0

    def size(n: int | None) -> str:
        return "-" if n is None else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"

    rows = [
        [
            d.id,
            d.name,
            d.kind,
            "-" if d.num_images is None else str(d.num_images),
            "-" if d.num_classes is None else str(d.num_classes),
            size(d.size_bytes),
            "yes" if d.available else "no",
        ]
        for d in items
    ]
    show.table(rows, ["ID", "NAME", "KIND", "IMAGES", "CLASSES", "SIZE", "AVAILABLE"])
    return 0


def _datasets_show(client: Client, args: argparse.Namespace) -> int:
    ds = client.get_dataset(args.id)
    if args.json:
        show.print_json(ds.api_json())
    else:
        print(f"{ds.id}  {ds.name}  {ds.kind}: {show.dataset_line(ds)}")
        if ds.class_names:
            print(f"  classes: {', '.join(ds.class_names)}")
    return 0


def _datasets_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_dataset(args.id)
    if args.json:
        show.print_json({"id": args.id, "deleted": True})
    else:
        print(f"deleted {args.id}")
    return 0


def _samples(client: Client, args: argparse.Namespace) -> int:
    png = client.samples(
        args.id,
        args.checkpoint,
        n=args.n,
        seed=args.seed,
        nrow=args.nrow,
        label=args.label,
        ema=args.ema,
        truncation=args.truncation,
    )
    if args.output == "-":
        sys.stdout.buffer.write(png)
        sys.stdout.buffer.flush()
    else:
        Path(args.output).write_bytes(png)
    report = {
        "path": args.output,
        "bytes": len(png),
        "checkpoint_id": png.checkpoint_id,
        "step": png.step,
        "etag": png.etag,
    }
    out = sys.stderr if args.output == "-" else sys.stdout
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        where = "stdout" if args.output == "-" else args.output
        print(f"wrote {where}: samples of {png.checkpoint_id} (step {png.step})", file=out)
    return 0

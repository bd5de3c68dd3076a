"""What each remote verb does: a call of the Client, then what it prints (through output).

ganforge_client.cli builds the parser and runs these with a Client; each returns the exit
code (0 done, 1 a watched job did not succeed or an image of a folder was not translated,
2 a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganforge_client import output as show

if TYPE_CHECKING:
    from ganforge_client import Client
    from ganforge_client.models import Png


# -- jobs -------------------------------------------------------------------------------------


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set FIELD=VALUE`` pairs: a JSON value, or a bare string (``--set dataset=shapes``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set wants FIELD=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def jobs_create(client: Client, args: argparse.Namespace) -> int:
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
        config |= parse_overrides(args.set)
    except SystemExit as exc:  # its message for a pair without '='
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job = client.create_job(config, name=args.name, idempotency_key=args.idempotency_key)
    if args.json:
        show.print_json(job.api_json())
    else:
        print(f"{job.status} {job.id} ({job.name}): {job.progress.total_steps} steps")
        print(f"follow it with: {args.prog} jobs watch {job.id}")
    return 0


def jobs_list(client: Client, args: argparse.Namespace) -> int:
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


def jobs_show(client: Client, args: argparse.Namespace) -> int:
    job = client.get_job(args.id)
    if args.json:
        show.print_json(job.api_json())
    else:
        show.show_job(job)
    return 0


def jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.cancel_job(args.id)
    if args.json:
        show.print_json(job.api_json())
    elif job.status == "canceled":
        print(f"canceled {job.id}")
    else:
        print(f"cancel requested for {job.id} ({job.status}); it stops at its next check")
    return 0


def _deleted(args: argparse.Namespace) -> int:
    """What a delete verb prints: the id, as JSON with --json."""
    if args.json:
        show.print_json({"id": args.id, "deleted": True})
    else:
        print(f"deleted {args.id}")
    return 0


def jobs_resume(client: Client, args: argparse.Namespace) -> int:
    job = client.resume_job(args.id, steps=args.steps)
    if args.json:
        show.print_json(job.api_json())
    else:
        print(f"{job.status} {job.id}: from step {job.progress.step} to {job.progress.total_steps}")
    return 0


def jobs_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_job(args.id)
    return _deleted(args)


def jobs_watch(client: Client, args: argparse.Namespace) -> int:
    job = client.get_job(args.id)  # a 404 before anything is drawn
    if args.json:
        from ganforge_client import JobFailed

        try:
            job = client.wait(args.id)
        except JobFailed as exc:  # failed or canceled: its record still goes to stdout
            show.print_json(exc.job.api_json())
            print(f"error: {exc}", file=sys.stderr)
            return 1
        show.print_json(job.api_json())
        return 0
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


def datasets_upload(client: Client, args: argparse.Namespace) -> int:
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
        ds = client.upload_dataset(
            args.file, name=args.name, pairing=args.pairing, progress=progress
        )
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        show.print_json(ds.api_json())
    else:
        print(f"uploaded {ds.id} ({ds.name}, {ds.kind}): {show.dataset_line(ds)}")
        hint = f"--set dataset={ds.id} --set image_size=..."
        if ds.pairing:  # a translation job: pix2pix on pairs, CycleGAN on two domains
            hint = f"--set kind={ds.pairing} {hint}"
        print(f"train on it with: {args.prog} jobs create {hint}")
    return 0


def datasets_list(client: Client, args: argparse.Namespace) -> int:
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


def datasets_show(client: Client, args: argparse.Namespace) -> int:
    ds = client.get_dataset(args.id)
    if args.json:
        show.print_json(ds.api_json())
    else:
        print(f"{ds.id}  {ds.name}  {ds.kind}: {show.dataset_line(ds)}")
        if ds.class_names:
            print(f"  classes: {', '.join(ds.class_names)}")
    return 0


def datasets_delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_dataset(args.id)
    return _deleted(args)


def samples(client: Client, args: argparse.Namespace) -> int:
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
    return emit_png(args, png, "samples")


def emit_png(args: argparse.Namespace, png: Png, what: str) -> int:
    """Write a picture verb's PNG to args.output ('-': stdout) and say what was written (a
    JSON report with --json) where it does not mix with the image."""
    if args.output == "-":
        sys.stdout.buffer.write(png)
        sys.stdout.buffer.flush()
    else:
        write_whole(Path(args.output), png)
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
        print(f"wrote {where}: {what} of {png.checkpoint_id} (step {png.step})", file=out)
    return 0


def write_whole(path: Path, data: bytes) -> None:
    """A whole file or none: written beside its target, then renamed over it."""
    part = path.with_name(f".{path.name}.part")
    try:
        part.write_bytes(data)
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise

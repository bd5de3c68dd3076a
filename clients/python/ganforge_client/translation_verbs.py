"""The remote CLI's translation verbs: ``translate`` (one image through POST .../translate,
or a folder as one folder translation on the server) and ``translations`` (the held-out
grid). Registered by ganforge_client.cli beside the others in ganforge_client.verbs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ganforge_client import output as show
from ganforge_client.verbs import emit_png, write_whole

if TYPE_CHECKING:
    from ganforge_client import Client


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what `translate DIR` picks up (any case)


def _same_path(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def translate(client: Client, args: argparse.Namespace) -> int:
    source: Path = args.input
    if source.is_dir():
        return _translate_folder(client, args, source)
    if not source.is_file():
        print(f"error: {source} is neither a file nor a folder", file=sys.stderr)
        return 2
    default = args.output is None
    if args.output == "-":
        target = None
    elif default:  # in the current folder, named after the input
        target = Path(f"{source.stem}-{args.direction or 'translated'}.png")
    else:
        target = Path(args.output)
        if target.is_dir():
            target = target / f"{source.stem}.png"
    if target is not None and target.exists() and _same_path(target, source):
        print(f"error: {target} is the input image; name another --out", file=sys.stderr)
        return 2
    try:
        data = source.read_bytes()
    except OSError as exc:
        print(f"error: cannot read {source}: {exc}", file=sys.stderr)
        return 2
    png = client.translate(args.id, data, args.checkpoint, direction=args.direction, ema=args.ema)
    if target is None:
        sys.stdout.buffer.write(png)
        sys.stdout.buffer.flush()
    else:
        try:
            write_whole(target, png)
        except OSError as exc:
            print(f"error: cannot write {target}: {exc}", file=sys.stderr)
            return 2
    where = "stdout" if target is None else str(target)
    report = {
        "input": str(source),
        "path": "-" if target is None else str(target),
        "bytes": len(png),
        "checkpoint_id": png.checkpoint_id,
        "step": png.step,
        "etag": png.etag,
    }
    out = sys.stderr if target is None else sys.stdout
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        named = " (the default name: --out sets another)" if default else ""
        print(
            f"wrote {where}{named}: {source.name} translated by {png.checkpoint_id} "
            f"(step {png.step})",
            file=out,
        )
    return 0


def _translate_folder(client: Client, args: argparse.Namespace, source: Path) -> int:
    if args.output is None or args.output == "-":
        print(f"error: {source} is a folder: --out must name the folder to write", file=sys.stderr)
        return 2
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        print(
            f"error: --out {out_dir} is a file; for a folder of images name a folder",
            file=sys.stderr,
        )
        return 2
    if out_dir.exists() and _same_path(out_dir, source):
        print(
            f"error: --out {out_dir} is the input folder; its images would be overwritten",
            file=sys.stderr,
        )
        return 2
    files = sorted(
        p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        kinds = "/".join(IMAGE_SUFFIXES)
        print(f"error: no {kinds} files in {source}", file=sys.stderr)
        return 2
    by_stem: dict[str, list[str]] = {}
    for p in files:
        by_stem.setdefault(f"{p.stem}.png", []).append(p.name)
    clashes = {name: names for name, names in by_stem.items() if len(names) > 1}
    if clashes:
        shown = "; ".join(f"{', '.join(names)} -> {name}" for name, names in clashes.items())
        print(f"error: two inputs would write one output: {shown}; rename one", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    return _translate_on_server(client, args, source, files, out_dir)


def _translate_on_server(
    client: Client, args: argparse.Namespace, source: Path, files: list[Path], out_dir: Path
) -> int:
    """The folder's images as one zip, translated on the server's worker (one checkpoint for
    all, fixed when it is submitted), the PNGs written into ``out_dir``; each image's line
    printed after, in name order, a refused one with the server's reason."""
    import tempfile

    from ganforge_client.folders import FolderTranslation, TranslationFailed, zip_folder

    total = len(files)

    def progress(t: FolderTranslation) -> None:
        if not args.json:
            p = t.progress
            print(f"{t.id} {t.status}: {p.done}/{p.total}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="ganforge-") as tmp:
        archive = zip_folder(source, Path(tmp) / f"{source.resolve().name or 'folder'}.zip", files)
        try:
            done = client.translate_folder(
                args.id,
                archive,
                out_dir,
                args.checkpoint,
                direction=args.direction,
                ema=args.ema,
                progress=progress,
            )
        except TranslationFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    refused = {f["name"]: f for f in done.report.failed}
    written: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for i, path in enumerate(files, 1):
        name = path.relative_to(source).as_posix()
        if name in refused:
            detail = refused[name].get("error", "")
            failed.append(
                {"input": str(path), "status": refused[name].get("status"), "detail": detail}
            )
            print(f"[{i}/{total}] {path.name}: refused: {detail}", file=sys.stderr, flush=True)
            continue
        target = out_dir / f"{path.stem}.png"
        written.append({"input": str(path), "path": str(target), "bytes": target.stat().st_size})
        if not args.json:
            print(f"[{i}/{total}] {path.name} -> {target}", flush=True)
    ref, step = done.checkpoint_id, done.checkpoint_step
    if args.json:
        report = {
            "translation_id": done.id,
            "checkpoint_id": ref if written else None,
            "step": step,
            "written": written,
            "failed": failed,
        }
        show.print_json(report)
    else:
        by = f" by {ref} (step {step})" if written else ""
        print(f"translated {len(written)} of {total} images from {source} into {out_dir}{by}")
    if failed:
        names = ", ".join(Path(f["input"]).name for f in failed)
        print(f"error: {len(failed)} not translated: {names}", file=sys.stderr)
        return 1
    return 0


def translations(client: Client, args: argparse.Namespace) -> int:
    png = client.translations(
        args.id, args.checkpoint, n=args.n, direction=args.direction, ema=args.ema
    )
    return emit_png(args, png, "translations")

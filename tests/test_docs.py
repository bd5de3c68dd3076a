"""docs/ and the README hold together: every relative link lands, and the architecture page
names every package folder of the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a `# comment` in a bash block is no heading)."""
    return "".join(
        part for i, part in enumerate(re.split(r"^```.*$", text, flags=re.M)) if i % 2 == 0
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", _prose(page.read_text()), flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slugs_are_githubs():
    assert slug("Scores, `best` and the dashboard") == "scores-best-and-the-dashboard"
    assert slug("Exports: ONNX and TorchScript") == "exports-onnx-and-torchscript"
    assert slug("Set up") == "set-up"


def test_every_relative_link_lands():
    broken = []
    for page in PAGES:
        for target in LINK.findall(_prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # http(s), mailto: not ours to check here
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n[a](p.md#title) [b](p.md#nope) [c](q.md)\n")
    found = LINK.findall(_prose(page.read_text()))
    assert found == ["p.md#title", "p.md#nope", "q.md"]
    assert anchors(page) == {"title"}


def _package_folders() -> list[str]:
    folders = []
    for top in ("app", "worker", "gan_core", "clients"):
        for init in sorted((ROOT / top).rglob("__init__.py")):
            if "__pycache__" not in init.parts:
                folders.append(init.parent.relative_to(ROOT).as_posix() + "/")
    return folders


def test_architecture_names_every_package_folder():
    text = (ROOT / "docs" / "architecture.md").read_text()
    folders = _package_folders()
    assert "app/core/jobs/" in folders and "gan_core/metrics/" in folders
    missing = [f for f in folders if f"`{f}`" not in text]
    assert not missing, f"package folders docs/architecture.md does not name: {missing}"


WRITES = re.compile(r"""(?:-o|--out|>)\s+([\w./-]+\.\w+)|\.save\(["']([^"']+)["']\)""")


def _written_files(text: str) -> list[str]:
    blocks = re.findall(r"^```(?:bash|python)\n(.*?)^```", text, flags=re.M | re.S)
    return [a or b for block in blocks for a, b in WRITES.findall(block)]


def test_no_two_examples_write_the_same_file():
    """Pasted one after another, no example overwrites another's file."""
    written = [name for page in PAGES for name in _written_files(page.read_text())]
    assert "samples.png" in written and "metrics.csv" in written and "one.png" in written
    repeated = sorted({name for name in written if written.count(name) > 1})
    assert not repeated, repeated
    assert _written_files("```bash\ngcurl -o a.png x\nsave -o a.png\n```\n") == ["a.png", "a.png"]


# The README's sections before the split (2026-12-06), and where each went: one click away.
MOVED = {
    "Walkthrough with curl": "README.md#walkthrough-with-curl",
    "Training configuration": "docs/configuration.md",
    "Scores, best and the dashboard": "docs/scores.md",
    "Train and sample from the command line": (
        "docs/api.md#train-and-sample-from-the-command-line"
    ),
    "From a script: the Python client and the remote CLI": (
        "docs/api.md#from-a-script-the-python-client-and-the-remote-cli"
    ),
    "Deploying a fleet": "docs/deploying.md#deploying-a-fleet",
    "Storing artifacts on S3": "docs/deploying.md#storing-artifacts-on-s3",
    "Settings": "docs/deploying.md#settings",
    "Security and operations": "docs/deploying.md#security-and-operations",
    "How it is built": "docs/architecture.md",
    "Benchmarks": "docs/benchmarks.md",
}


def test_every_former_readme_section_is_one_click_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    targets = set(LINK.findall(_prose(readme)))
    for section, where in MOVED.items():
        if where.startswith("README.md#"):
            assert where.partition("#")[2] in anchors(ROOT / "README.md"), section
        else:
            assert where in targets, f"{section}: the README does not link {where}"


def test_every_config_field_of_every_kind_is_documented():
    from gan_core.config import TrainConfig
    from gan_core.translation.config import PairedConfig, UnpairedConfig

    text = (ROOT / "docs" / "configuration.md").read_text()
    noise, translation = text.split("\n## Translation jobs\n", 1)
    for model, section in (
        (TrainConfig, noise),
        (PairedConfig, translation),
        (UnpairedConfig, translation),
    ):
        missing = [name for name in model.model_fields if f"`{name}`" not in section]
        assert not missing, f"{model.__name__} fields not in docs/configuration.md: {missing}"

"""The new-job form, rendered from each job kind's config model (``TrainConfig``,
``PairedConfig``, ``UnpairedConfig``) so it cannot drift from the API: a select of the kind,
and one set of fields per kind, of which the page shows the chosen one.

Each input carries what the page's script needs to send only what the user changed:
``data-kind`` (how to turn its text into JSON), ``data-default`` (the text it started with)
and ``data-nullable`` (an emptied field means null). The server stays the validator: the
form is ``novalidate`` and a 422 is shown next to the input it names.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from html import escape
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gan_core.config import TrainConfig
from gan_core.translation.config import PairedConfig, UnpairedConfig

# The job kinds, as the kind select offers them: (kind, model, label). A noise job's inputs
# keep plain ids (f-image_size); a translation kind's are prefixed (f-paired-image_size).
KINDS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("noise", TrainConfig, "noise → image (DCGAN, conditional)"),
    ("paired", PairedConfig, "paired translation A → B (pix2pix)"),
    ("unpaired", UnpairedConfig, "unpaired translation A ↔ B (CycleGAN)"),
)

# Headings for the form's sections; a field not named here lands in "Other", so a new
# config field still appears without touching this file.
GROUPS: dict[str, tuple[str, ...]] = {
    "Preset": ("preset",),  # a noise job's named recipe (gan_core.presets); empty = none
    "Data": ("dataset", "image_size", "channels", "channels_a", "channels_b"),
    "Model": (
        "arch",
        "generator",
        "conditional",
        "num_classes",
        "latent_dim",
        "g_width",
        "d_width",
        "blocks_per_stage",
        "group_size",
        "expansion",
    ),
    "Objective": (
        "loss",
        "lambda_l1",
        "lambda_cycle",
        "lambda_identity",
        "pool_size",
        "gp_weight",
        "r1_gamma",
        "r2_gamma",
        "reg_every",
        "spectral_norm",
        "d_steps",
    ),
    "Optimisation": (
        "steps",
        "batch_size",
        "g_lr",
        "d_lr",
        "g_betas",
        "d_betas",
        "lr_schedule",
        "lr_decay_start",
    ),
    "Stabilisers": ("ema_decay", "ema_rampup", "augment"),
    "Divergence": ("on_divergence", "max_rollbacks"),
    "Run control": (
        "seed",
        "checkpoint_every",
        "keep_checkpoints",
        "precision",
        "device",
        "devices",
    ),
}
# Filled in by the page from GET /v1/datasets (uploads are per key, so not known here).
DATASET_FIELD = "dataset"


@dataclass(frozen=True)
class FieldSpec:
    """What an input needs to know about one config field."""

    name: str
    kind: Literal["int", "float", "bool", "str", "pair"]
    nullable: bool
    default: Any
    choices: tuple[Any, ...] | None  # a Literal's values: rendered as a select
    help: str
    minimum: float | None
    maximum: float | None
    exclusive: frozenset[str]  # "min" / "max" when that bound itself is not allowed


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``| None``, and whether None was allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def spec_of(name: str, field: FieldInfo) -> FieldSpec:
    """Describe one config field for the form."""
    annotation, nullable = _unwrap(field.annotation)
    choices: tuple[Any, ...] | None = None
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        kind = "int" if all(isinstance(c, int) for c in choices) else "str"
    elif get_origin(annotation) is tuple:
        kind = "pair"
    elif annotation is bool:
        kind = "bool"
    elif annotation is int:
        kind = "int"
    elif annotation is float:
        kind = "float"
    else:
        kind = "str"
    minimum = maximum = None
    exclusive: set[str] = set()
    for m in field.metadata:
        if isinstance(m, at.Ge | at.Gt):
            minimum = float(getattr(m, "ge", getattr(m, "gt", 0)))
            if isinstance(m, at.Gt):
                exclusive.add("min")
        elif isinstance(m, at.Le | at.Lt):
            maximum = float(getattr(m, "le", getattr(m, "lt", 0)))
            if isinstance(m, at.Lt):
                exclusive.add("max")
    return FieldSpec(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        nullable=nullable,
        default=field.default,
        choices=choices,
        help=field.description or "",
        minimum=minimum,
        maximum=maximum,
        exclusive=frozenset(exclusive),
    )


def _text(value: Any) -> str:
    """A value as its input shows it (and as ``data-default`` records it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON says it, and as the script compares it
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _number(value: float) -> str:
    if not value.is_integer():
        return f"{value:g}"
    return f"{int(value):,}" if abs(value) >= 10_000 else str(int(value))


def _range(spec: FieldSpec) -> str:
    """The allowed values of a number, e.g. "16–256" or "> 0, ≤ 1"."""
    if spec.kind not in ("int", "float"):
        return ""
    lo = "" if spec.minimum is None else _number(spec.minimum)
    hi = "" if spec.maximum is None or spec.maximum >= 2**53 else _number(spec.maximum)
    if lo and hi and not spec.exclusive:
        return f"{lo}–{hi}"
    parts = [f"{'>' if 'min' in spec.exclusive else '≥'} {lo}"] if lo else []
    parts += [f"{'<' if 'max' in spec.exclusive else '≤'} {hi}"] if hi else []
    return ", ".join(parts)


def _help(spec: FieldSpec) -> str:
    parts = [spec.help] if spec.help else []
    if limits := _range(spec):
        parts.append(f"range {limits}")
    parts.append("default: " + (_text(spec.default) or "none"))
    if spec.nullable and spec.default is not None:
        parts.append("empty: none")
    return "; ".join(parts)


def _control(spec: FieldSpec, key: str) -> str:
    common = (
        f'id="f-{key}" name="{key}" data-field="{spec.name}" '
        f'data-kind="{spec.kind}" data-default="{escape(_text(spec.default))}" '
        f'aria-describedby="help-{key} err-{key}"' + (" data-nullable" if spec.nullable else "")
    )
    if spec.name == DATASET_FIELD:
        default = escape(_text(spec.default))
        return f'<select {common}><option value="{default}">{default}</option></select>'
    if spec.choices is not None:
        options = ['<option value="">(none)</option>'] if spec.nullable else []
        for choice in spec.choices:
            value = escape(_text(choice))
            selected = " selected" if choice == spec.default else ""
            options.append(f'<option value="{value}"{selected}>{value}</option>')
        return f"<select {common}>{''.join(options)}</select>"
    if spec.kind == "bool":
        checked = " checked" if spec.default else ""
        return f'<input type="checkbox" {common}{checked}>'
    value = escape(_text(spec.default))
    if spec.kind in ("int", "float"):
        step = "1" if spec.kind == "int" else "any"
        bounds = "".join(
            f' {attr}="{v:g}"'
            for attr, v in (("min", spec.minimum), ("max", spec.maximum))
            if v is not None and abs(v) < 2**53
        )
        return f'<input type="number" step="{step}"{bounds} {common} value="{value}">'
    return f'<input type="text" {common} value="{value}" autocomplete="off">'


def render_field(spec: FieldSpec, prefix: str = "") -> str:
    """One labelled input with its help text and a place for its error."""
    key = prefix + spec.name
    return (
        f'<div class="field field-{spec.kind}" data-field-box="{spec.name}">'
        f'<label for="f-{key}">{spec.name}</label>'
        f"{_control(spec, key)}"
        f'<p class="help" id="help-{key}">{escape(_help(spec))}</p>'
        f'<p class="error" id="err-{key}" data-error-for="{spec.name}" hidden></p>'
        "</div>"
    )


def kind_fields(model: type[BaseModel], prefix: str = "") -> str:
    """Every field of one kind's config (but ``kind``) as form inputs, grouped in fieldsets."""
    fields = {n: f for n, f in model.model_fields.items() if n != "kind"}
    placed = {name for names in GROUPS.values() for name in names}
    groups = {k: [n for n in v if n in fields] for k, v in GROUPS.items()}
    groups["Other"] = [n for n in fields if n not in placed]
    out = []
    for title, names in groups.items():
        if names:
            inner = "".join(render_field(spec_of(n, fields[n]), prefix) for n in names)
            out.append(f"<fieldset><legend>{escape(title)}</legend>{inner}</fieldset>")
    return "\n".join(out)


def config_fields() -> str:
    """The kind select, then each kind's fields in a section the page shows when chosen."""
    options = "".join(
        f'<option value="{kind}"{" selected" if kind == "noise" else ""}>{escape(label)}</option>'
        for kind, _, label in KINDS
    )
    out = [
        '<div class="field" data-field-box="kind"><label for="f-kind">kind</label>'
        f'<select id="f-kind" name="kind" aria-describedby="err-kind">{options}</select>'
        '<p class="help">what the job trains: images from noise, or a translator of images'
        "</p>"
        '<p class="error" id="err-kind" data-error-for="kind" hidden></p></div>'
    ]
    for kind, model, _ in KINDS:
        hidden = "" if kind == "noise" else " hidden"
        prefix = "" if kind == "noise" else f"{kind}-"
        out.append(
            f'<div class="kind-fields" data-kind-fields="{kind}"{hidden}>'
            f"{kind_fields(model, prefix)}</div>"
        )
    return "\n".join(out)

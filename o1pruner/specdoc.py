"""Markdown reference of every RunSpec field, generated from the spec itself.

`python -m o1pruner.specdoc > docs/spec.md` regenerates docs/spec.md; a test keeps it current.
"""

from __future__ import annotations

import json
import sys
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from o1pruner.spec import RunSpec


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in args).replace("NoneType", "null")
    if origin in (list, tuple):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    return getattr(ann, "__name__", str(ann)).replace("NoneType", "null")


def _bounds(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
    return ", ".join(parts)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    return f"`{json.dumps(value)}`"


def _nested(field: FieldInfo) -> type[BaseModel] | None:
    for ann in (field.annotation, *typing.get_args(field.annotation)):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
        for sub in typing.get_args(ann):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                return sub
    return None


def spec_reference() -> str:
    """The reference page: one table per section, one row per field."""
    lines = ["# Spec reference", "",
             "Every parameter of a run, generated from `o1pruner/spec.py` "
             "(`python -m o1pruner.specdoc > docs/spec.md`). Set them in the spec YAML, "
             "with `--set section.field=value` on the command line, or in the web UI form.", ""]

    seen: dict[type, str] = {}

    def section(model: type[BaseModel], prefix: str, title: str, intro: str = "") -> None:
        if model in seen:
            lines.extend([f"## `{title}`", "", f"Same fields as `{seen[model]}`.", ""])
            return
        seen[model] = title
        doc = intro or (model.__dict__.get("__doc__") or "").strip().split("\n")[0]
        lines.extend([f"## `{title}`", "", doc, "",
                      "| field | type | default | allowed | help |",
                      "|---|---|---|---|---|"])
        subsections = []
        for name, field in model.model_fields.items():
            key = field.alias or name
            nested = _nested(field)
            if nested is not None and nested is not RunSpec and prefix:
                subsections.append((nested, f"{prefix}{key}."))
            help_text = (field.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | "
                         f"{_bounds(field)} | {help_text} |")
        lines.append("")
        for nested, sub_prefix in subsections:
            section(nested, sub_prefix, sub_prefix.rstrip("."))

    lines.extend([f"Top level: `schema_version` ({RunSpec.model_fields['schema_version'].description})",
                  ""])
    for name, field in RunSpec.model_fields.items():
        nested = _nested(field)
        if nested is not None:
            section(nested, f"{name}.", name, field.description or "")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(spec_reference())

"""The spec builder: a form generated from RunSpec's fields, and values <-> spec.

Nothing here lists parameters by hand. `leaves()` walks `RunSpec.model_fields`
recursively; each leaf field gets a widget chosen from its type (Literal -> dropdown,
bool -> checkbox, number -> text box parsed strictly, ...), labelled from its title or
name and carrying its help text and default. A field added to the spec appears in the form
with no UI code. Form values are turned back into a spec through
`o1pruner.specio.spec_from_dict`, so the form, YAML files and the CLI share one validator.
A field whose help text says "<value> only:" (e.g. `lora only:`) applies only while the
choice field of its section that offers <value> holds it; otherwise the form leaves it out.
"""

from __future__ import annotations

import functools
import logging
import math
import operator
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from o1pruner.safeyaml import YamlError, safe_load
from o1pruner.spec import DatasetRef, RunSpec
from o1pruner.specio import SpecError, spec_from_dict

logger = logging.getLogger(__name__)

GENERAL = "general"
# words spelled differently in a label than in a field name
LABEL_WORDS = {"k": "K", "lr": "LR", "lora": "LoRA", "dpo": "DPO", "gpu": "GPU", "ip": "IP",
               "aes": "AES", "id": "ID", "deepspeed": "DeepSpeed", "top": "top"}
ONLY_WHEN = re.compile(r"^(\w+) only:")  # help text "lora only: ..." -> applies with lora
INT_TEXT = re.compile(r"[+-]?\d+")
FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
SECTION_TITLES = {"model": "Model", "data": "Data", "presample": "Pre-sample",
                  "reward": "Reward", "train": "Train", "eval": "Evaluate", "run": "Run",
                  GENERAL: "General"}


@dataclass(frozen=True)
class Leaf:
    """One form field: a leaf of the spec (a value, or a whole dataset reference)."""

    path: tuple[str, ...]  # keys as written in YAML (aliases), e.g. ("reward", "lambda")
    kind: str  # choice|bool|int|float|str|list_str|dataset|datasets|range|yaml
    optional: bool
    info: FieldInfo
    choices: tuple[Any, ...] = ()

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def label(self) -> str:
        """What the form calls the field: its `title` in the spec, else its name in words
        (`max_new_tokens` -> "Max new tokens")."""
        if self.info.title:
            return self.info.title
        text = " ".join(LABEL_WORDS.get(word, word) for word in self.name.split("_"))
        return text[:1].upper() + text[1:]

    @property
    def section(self) -> str:
        return self.path[0] if len(self.path) > 1 else GENERAL

    @property
    def elem_id(self) -> str:
        return "field-" + "-".join(self.path)

    def bounds(self) -> tuple[float | None, float | None]:
        """(minimum, maximum) from the field's ge/gt and le/lt constraints."""
        low = high = None
        for meta in self.info.metadata:
            for name in ("ge", "gt"):
                if getattr(meta, name, None) is not None:
                    low = getattr(meta, name)
            for name in ("le", "lt"):
                if getattr(meta, name, None) is not None:
                    high = getattr(meta, name)
        return low, high


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) < len(get_args(annotation)):
            return (args[0] if len(args) == 1 else functools.reduce(operator.or_, args)), True
    return annotation, False


def _is_section(annotation: Any) -> bool:
    return (isinstance(annotation, type) and issubclass(annotation, BaseModel)
            and annotation is not DatasetRef)


def _kind(annotation: Any) -> tuple[str, tuple[Any, ...]]:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "choice", args
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    if annotation is str:
        return "str", ()
    if annotation is DatasetRef:
        return "dataset", ()
    if origin is list and args == (str,):
        return "list_str", ()
    if origin is list and args == (DatasetRef,):
        return "datasets", ()
    if origin is tuple and len(args) == 2 and all(a in (int, float) for a in args):
        return "range", ()
    return "yaml", ()  # anything else is edited as inline YAML


def leaves(model: type[BaseModel] = RunSpec, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """Every leaf field of `model`, depth first in declaration order."""
    return list(_leaves(model, prefix))


@functools.cache
def _leaves(model: type[BaseModel], prefix: tuple[str, ...]) -> tuple[Leaf, ...]:
    out: list[Leaf] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        annotation, optional = _unwrap_optional(info.annotation)
        if _is_section(annotation) and not optional:
            out += _leaves(annotation, (*prefix, key))
            continue
        kind, choices = _kind(annotation)
        out.append(Leaf((*prefix, key), kind, optional, info, choices))
    return tuple(out)


def conditions(all_leaves: Sequence[Leaf] | None = None) -> dict[str, tuple[str, str]]:
    """{field: (choice field, value)} for each field whose help text starts "<value> only:"
    (e.g. `train.lora_rank` -> (`train.finetuning`, `lora`)): the choice field of the same
    section that offers <value>."""
    all_leaves = list(all_leaves if all_leaves is not None else leaves())
    out: dict[str, tuple[str, str]] = {}
    for leaf in all_leaves:
        match = ONLY_WHEN.match(leaf.info.description or "")
        if not match:
            continue
        owner = next((o for o in all_leaves if o.kind == "choice" and o.path[:-1] ==
                      leaf.path[:-1] and match.group(1) in map(str, o.choices)), None)
        if owner is not None:
            out[leaf.key] = (owner.key, match.group(1))
    return out


def applies(key: str, by_key: Mapping[str, Any],
            conds: Mapping[str, tuple[str, str]] | None = None) -> bool:
    """Whether field `key` applies given the form's values (by dotted key)."""
    cond = (conditions() if conds is None else conds).get(key)
    return cond is None or str(by_key.get(cond[0])) == cond[1]


def sections(all_leaves: Sequence[Leaf] | None = None) -> dict[str, list[Leaf]]:
    """Leaves grouped by top-level section, in spec order (top-level values: `general`)."""
    grouped: dict[str, list[Leaf]] = {}
    for leaf in all_leaves if all_leaves is not None else leaves():
        grouped.setdefault(leaf.section, []).append(leaf)
    return grouped


def section_title(section: str) -> str:
    return SECTION_TITLES.get(section, section.replace("_", " ").title())


# ------------------------------------------------------------------- value conversion
def ref_to_text(ref: Any) -> str:
    """A dataset reference as the one-line text the picker shows (name, or inline YAML)."""
    if isinstance(ref, str):
        return ref
    if isinstance(ref, dict):
        ref = {k: v for k, v in ref.items() if v is not None}
    return yaml.safe_dump(ref, default_flow_style=True, width=10_000, sort_keys=False).strip()


def text_to_ref(text: Any) -> Any:
    """Picker text -> a dataset reference: a name/path, or `{name: ..., ...}` inline YAML."""
    text = "" if text is None else str(text).strip()
    if text.startswith("{"):
        try:
            value = safe_load(text)
        except YamlError as err:
            raise ValueError(f"not usable inline YAML ({err.problem}); expected e.g. "
                             "{name: my.jsonl, problem_field: question, answer_field: answer}") from None
        if not isinstance(value, dict):
            raise ValueError("expected a mapping like {name: my.jsonl, problem_field: q}")
        return value
    return text


def to_widget(leaf: Leaf, value: Any) -> Any:
    """A spec value (JSON form) -> the value its widget holds."""
    if leaf.kind == "bool":
        return bool(value)
    if leaf.kind in ("int", "float"):  # a text box, parsed strictly (empty means null)
        return "" if value is None else number_text(value)
    if leaf.kind == "choice":
        return value
    if leaf.kind == "str":
        return "" if value is None else str(value)
    if leaf.kind == "list_str":
        return ", ".join(str(v) for v in value or [])
    if leaf.kind == "dataset":
        return "" if value is None else ref_to_text(value)
    if leaf.kind == "datasets":
        return [ref_to_text(v) for v in value or []]
    if leaf.kind == "range":
        return "" if value is None else ", ".join(f"{float(v):g}" for v in value)
    return "" if value is None else ref_to_text(value)


def from_widget(leaf: Leaf, raw: Any) -> Any:
    """A widget value -> the spec value (raises ValueError with what was expected)."""
    blank = raw is None or (isinstance(raw, str) and not raw.strip())
    if leaf.kind == "bool":
        return bool(raw)
    if blank and leaf.kind == "list_str":
        return []
    if blank and leaf.kind != "datasets":
        return None if leaf.optional else ("" if leaf.kind in ("str", "dataset") else None)
    if leaf.kind in ("int", "float"):
        return parse_number(leaf, raw)
    if leaf.kind == "choice":
        return next((c for c in leaf.choices if str(c) == str(raw)), raw)
    if leaf.kind == "str":
        return str(raw)
    if leaf.kind == "list_str":
        return [p.strip() for p in str(raw).split(",") if p.strip()]
    if leaf.kind == "dataset":
        return text_to_ref(raw)
    if leaf.kind == "datasets":
        return [text_to_ref(v) for v in (raw or []) if str(v).strip()]
    if leaf.kind == "range":
        parts = [p for p in re.split(r"[,\s]+", str(raw).strip(" []()")) if p]
        try:
            low, high = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"expected 'low, high' (e.g. -2, 4) or empty for none; got {raw!r}") from None
        return [low, high]
    try:
        return safe_load(str(raw))
    except YamlError as err:
        raise ValueError(f"not usable YAML: {err}") from None


def number_text(value: Any) -> str:
    """A number as the shortest text that reads back the same (2.0 -> "2", 2e-07)."""
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def parse_number(leaf: Leaf, raw: Any) -> int | float:
    """Widget text -> a number, strictly: "2,5" or "1 000" is an error, never 25 or 1."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        if leaf.kind == "int" and isinstance(raw, float) and raw.is_integer():
            return int(raw)
        return float(raw) if leaf.kind == "float" else raw
    text = str(raw).strip()
    empty = " (or empty for null)" if leaf.optional else ""
    if leaf.kind == "int":
        if INT_TEXT.fullmatch(text):
            return int(text)
        if FLOAT_TEXT.fullmatch(text) and math.isfinite(float(text)) and float(text).is_integer():
            return int(float(text))
        raise ValueError(f"expected a whole number{empty}; got {text!r}")
    if FLOAT_TEXT.fullmatch(text):
        return float(text)
    hint = "; write decimals with a dot (2.5), not a comma" if "," in text else ""
    raise ValueError(f"expected a number{empty}; got {text!r}{hint}")


@functools.cache
def _adapter(leaf: Leaf) -> TypeAdapter:
    return TypeAdapter(Annotated[leaf.info.annotation, leaf.info])


def check_field(leaf: Leaf, raw: Any) -> str | None:
    """The problem with one widget's value on its own (its type, bounds and pattern, not
    the rules between fields), as `<field path>: <what is wrong>`; None when it is fine."""
    try:
        value = from_widget(leaf, raw)
    except (TypeError, ValueError) as err:
        return f"{leaf.key}: {err}"
    try:
        _adapter(leaf).validate_python(value)
    except ValidationError as err:
        return "; ".join(f"{leaf.key}: {e['msg'].removeprefix('Value error, ')}; got "
                         f"{e.get('input')!r}" for e in err.errors())
    return None


def _get(data: Mapping[str, Any], path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def spec_to_values(spec: RunSpec, all_leaves: Sequence[Leaf] | None = None) -> list[Any]:
    """Widget values for every leaf, in leaf order."""
    data = spec.model_dump(mode="json", by_alias=True)
    return [to_widget(leaf, _get(data, leaf.path))
            for leaf in (all_leaves if all_leaves is not None else leaves())]


def default_values() -> list[Any]:
    return spec_to_values(RunSpec())


def values_to_dict(values: Sequence[Any] | Mapping[str, Any],
                   all_leaves: Sequence[Leaf] | None = None) -> tuple[dict[str, Any], list[str]]:
    """Widget values -> a nested spec mapping, plus one problem line per unreadable widget."""
    all_leaves = list(all_leaves if all_leaves is not None else leaves())
    if isinstance(values, Mapping):
        values = [values.get(leaf.key) for leaf in all_leaves]
    if len(values) != len(all_leaves):
        raise ValueError(f"expected {len(all_leaves)} form values, got {len(values)}")
    by_key = {leaf.key: raw for leaf, raw in zip(all_leaves, values, strict=True)}
    conds = conditions(all_leaves)
    data: dict[str, Any] = {}
    problems: list[str] = []
    for leaf, raw in zip(all_leaves, values, strict=True):
        if not applies(leaf.key, by_key, conds):  # hidden in the form: the spec's default
            continue
        try:
            value = from_widget(leaf, raw)
        except (TypeError, ValueError) as err:
            problems.append(f"{leaf.key}: {err}")
            continue
        node = data
        for key in leaf.path[:-1]:
            node = node.setdefault(key, {})
        node[leaf.path[-1]] = value
    return data, problems


def form_to_spec(values: Sequence[Any] | Mapping[str, Any]) -> RunSpec:
    """Form values (in leaf order, or by dotted key) -> a validated RunSpec.

    Raises SpecError whose `problems` name the field path of every mistake, the widget
    conversion problems and the spec's own validation together.
    """
    data, problems = values_to_dict(values)
    try:
        spec = spec_from_dict(data, source="form")
    except SpecError as err:
        raise SpecError(problems + err.problems, "form") from None
    if problems:
        raise SpecError(problems, "form")
    return spec


def problems_by_section(problems: Sequence[str]) -> dict[str, list[str]]:
    """Group problem lines by the section their field path starts with (else `general`)."""
    names = set(sections())
    grouped: dict[str, list[str]] = {}
    for line in problems:
        head = re.split(r"[.: ]", line, maxsplit=1)[0]
        grouped.setdefault(head if head in names else GENERAL, []).append(line)
    return grouped


def problems_by_field(problems: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """({field path: its problem lines}, the lines that name no single field)."""
    placed: dict[str, list[str]] = {}
    unplaced: list[str] = []
    for line in problems:
        key = field_of(line)
        if key is None:
            unplaced.append(line)
        else:
            placed.setdefault(key, []).append(line)
    return placed, unplaced


def field_of(problem: str) -> str | None:
    """The dotted field path a problem line starts with, if it names a form field."""
    head = re.split(r"[: ]", problem, maxsplit=1)[0]
    keys = {leaf.key for leaf in leaves()}
    while head:
        if head in keys:
            return head
        head = head.rpartition(".")[0]
    return None

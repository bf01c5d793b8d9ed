"""Reading and writing RunSpec as YAML, `--set a.b=value` overrides, and readable errors.

Every user mistake becomes a `SpecError` holding one line per problem:
`<field path> (line L): <what is wrong>; got <value>`. Callers print them; nobody prints
a traceback for a bad spec.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from o1pruner.files import atomic_write_text
from o1pruner.safeyaml import MAX_BYTES, YamlError, load_yaml, safe_load
from o1pruner.spec import RunSpec

logger = logging.getLogger(__name__)

MAX_PROBLEMS = 50  # problem lines listed for one spec

# Keys that were renamed: old dotted path -> new dotted path. Accepted with a warning.
RENAMED_KEYS: dict[str, str] = {
    "presample.num_samples": "presample.k",
    "presample.n": "presample.k",
    "reward.lam": "reward.lambda",
    "reward.m": "reward.samples_per_problem",
    "train.lr": "train.learning_rate",
    "train.num_epochs": "train.epochs",
    "train.finetuning_type": "train.finetuning",
    "train.eps": "train.epsilon",
}


class SpecError(ValueError):
    """A spec that cannot be used; `problems` has one human-readable line per mistake."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "invalid spec:\n" + "\n".join(f"  {p}" for p in problems))


# ------------------------------------------------------------------------------ YAML
def dump_yaml(spec: RunSpec) -> str:
    """The spec as YAML, every field written out, in declaration order."""
    return spec.to_yaml()


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], yaml.Node | None]:
    try:
        data, node = load_yaml(text, source)
    except YamlError as err:
        raise SpecError([err.describe()], source) from None
    if data is None:
        raise SpecError(["the spec is empty; an empty spec would mean every default, which "
                         "is the paper's scale (days of GPU work). Start from a template, "
                         "e.g. templates/quickstart.yaml"], source)
    if not isinstance(data, dict):
        raise SpecError(
            [f"the top level must be a mapping of sections (model, data, ...), got "
             f"{type(data).__name__}"],
            source,
        )
    return data, node


def _line_of(node: yaml.Node | None, path: Iterable[Any]) -> int | None:
    """1-based line of the YAML node at `path` (keys and list indices), or of its deepest
    existing parent."""
    line = None
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            if match is None:
                return line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if key >= len(node.value):
                return line
            node = node.value[key]
        else:
            return line
        line = node.start_mark.line + 1
    return line


# ------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value); the value is read as YAML (5, 1e-6, [1, 2], null)."""
    if "=" not in text:
        raise SpecError([f"--set {text!r}: expected KEY=VALUE, e.g. reward.lambda=5"])
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError([f"--set {text!r}: empty key"])
    try:
        value = safe_load(raw, f"--set {key.strip()}") if raw.strip() else ""
    except YamlError as err:
        if not err.malformed:
            raise SpecError([str(err)]) from None
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def _apply_renames(data: dict[str, Any], warnings: list[str]) -> None:
    for old, new in RENAMED_KEYS.items():
        (osec, okey), (_, nkey) = old.split("."), new.split(".")
        section = data.get(osec)
        if isinstance(section, dict) and okey in section:
            if nkey in section:
                continue  # both given: let validation report the unknown old key
            section[nkey] = section.pop(okey)
            warnings.append(f"{old} was renamed to {new}; please update your spec")


# ---------------------------------------------------------------------------- errors
def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(err: ValidationError, node: yaml.Node | None = None,
                            limit: int = MAX_PROBLEMS) -> list[str]:
    """One line per problem: dotted field path, line in the YAML, message, bad value; at
    most `limit` lines, then one that counts the rest (each line looks its field up in
    the YAML, so the work stays proportional to what is shown)."""
    lines: list[str] = []
    items = err.errors()
    for count, item in enumerate(items):
        if len(lines) >= limit:
            lines.append(f"... and {len(items) - count} more problem(s) not listed; fix "
                         "these first")
            break
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # pydantic puts union/literal branch names in loc; keep only real keys.
        loc = [p for p in loc if p not in ("str", "tagged-union")]
        path = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(node, loc) if node is not None else None
        where = f" (line {line})" if line else ""
        msg = item["msg"]
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if item["type"] == "extra_forbidden":
            section = _section_model(loc[:-1])
            allowed = ", ".join(section.model_fields) if section else ""
            msg = f"unknown field; allowed here: {allowed}" if allowed else "unknown field"
            lines.append(f"{path}{where}: {msg}")
            continue
        if item["type"] == "missing":
            lines.append(f"{path}{where}: required field is missing")
            continue
        if isinstance(item.get("input"), dict):
            # A cross-field rule of a whole section: each line is "<field>: <message>".
            for part in msg.split("\n"):
                field, sep, rest = part.partition(": ")
                sub = [*loc, *field.split(".")] if sep and " " not in field else loc
                if sep and " " not in field and "." in field and not loc:
                    sub = field.split(".")
                sub_path = ".".join(str(p) for p in sub) or "(top level)"
                sub_line = _line_of(node, sub) if node is not None else None
                sub_where = f" (line {sub_line})" if sub_line else ""
                lines.append(f"{sub_path}{sub_where}: {rest if sub != loc else part}")
            continue
        lines.append(f"{path}{where}: {msg}; got {_describe(item.get('input'))}")
    return lines


def _section_model(loc: list[Any]) -> type | None:
    """The pydantic model class found at `loc` inside RunSpec (None if not a model)."""
    model: Any = RunSpec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and hasattr(c, "model_fields")]
        if not nested:
            for c in candidates:
                nested += [a for a in getattr(c, "__args__", ()) if hasattr(a, "model_fields")]
        if not nested:
            return None
        model = nested[0]
    return model


# ---------------------------------------------------------------------------- loading
def spec_from_dict(
    data: Mapping[str, Any],
    overrides: Iterable[str] = (),
    source: str | None = None,
    node: yaml.Node | None = None,
) -> RunSpec:
    """Validate a plain mapping (plus overrides) into a RunSpec, or raise SpecError."""
    data = apply_overrides(_deep_copy(dict(data)), overrides)
    nul = list(_nul_paths(data))[:MAX_PROBLEMS]
    if nul:
        raise SpecError([f"{'.'.join(map(str, path))}{_where(node, path)}: contains a NUL "
                         "character (\\0), which no name, path or text may" for path in nul],
                        source)
    warnings: list[str] = []
    _apply_renames(data, warnings)
    for w in warnings:
        logger.warning("%s%s", f"{source}: " if source else "", w)
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, node), source) from None


def load_spec(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RunSpec:
    """Read a spec YAML file (or the defaults when path is None), apply `--set` overrides."""
    if path is None:
        return spec_from_dict({}, overrides, source="(defaults)")
    path = Path(path)
    source = str(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise SpecError([f"{path}: {path.stat().st_size:,} bytes is more than the "
                             f"{MAX_BYTES:,} a spec may have"], None)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"spec file not found: {path}"], None) from None
    except IsADirectoryError:
        raise SpecError([f"{path} is a folder; expected a spec YAML file"], None) from None
    except UnicodeDecodeError as err:
        raise SpecError([f"{path}: not UTF-8 text (byte {err.start}); expected a spec YAML "
                         "file"], None) from None
    except OSError as err:
        raise SpecError([f"cannot read spec file {path}: {err.strerror or err}"], None) from None
    data, node = _parse_yaml(text, source)
    return spec_from_dict(data, overrides, source=source, node=node)


def load_spec_text(text: str, source: str = "(text)", overrides: Iterable[str] = ()) -> RunSpec:
    """Like load_spec, for YAML already in memory (web UI import)."""
    data, node = _parse_yaml(text, source)
    return spec_from_dict(data, overrides, source=source, node=node)


def save_spec(spec: RunSpec, path: str | Path) -> None:
    atomic_write_text(Path(path), dump_yaml(spec))


def _nul_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of the strings (values or keys) that hold a NUL: no path, name or text may."""
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nul_paths(key, (*path, key)) if isinstance(key, str) else iter(())
            yield from _nul_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nul_paths(item, (*path, i))


def _where(node: yaml.Node | None, path: tuple[Any, ...]) -> str:
    line = _line_of(node, path) if node is not None else None
    return f" (line {line})" if line else ""


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value

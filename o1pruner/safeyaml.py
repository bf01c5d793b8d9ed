"""YAML from untrusted hands (spec files, web UI imports, inline YAML fields, templates).

`yaml.safe_load` builds no objects, but it shares aliased nodes, and everything that later
copies or walks the data expands them: a few hundred bytes of nested aliases (a "billion
laughs") become billions of nodes, and a self-referencing alias recurses forever. Here the
composed node graph is checked before anything is built: the size it expands to, its
nesting depth and the text's length are bounded, and a cycle is refused, each with a clear
error naming the line, in well under a second. Building the data (SpecLoader) keeps dates
as text, refuses tags that build other types and keys given twice, and turns whatever a
constructor raises into the same kind of error at its line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from o1pruner.errors import UserError

MAX_BYTES = 1 << 20  # 1 MiB of YAML text
MAX_NODES = 100_000  # scalars + collections after alias expansion
MAX_DEPTH = 64
MAX_INT_DIGITS = 100  # a whole number longer than this is a mistake, not a setting
TIMESTAMP = "tag:yaml.org,2002:timestamp"
REFUSED_TAGS = (TIMESTAMP, "tag:yaml.org,2002:binary", "tag:yaml.org,2002:set",
                "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs")


class _TooDeep(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark | None):
        self.mark = mark


class SpecLoader(yaml.SafeLoader):
    """SafeLoader for data from outside: a date stays text (no timestamp resolver),
    timestamp/binary/set/ordered-pair tags are refused, a key given twice in a mapping is
    refused, nesting is bounded while composing, and any error a constructor raises
    (ValueError, KeyError, a 5,000-digit number...) becomes a YAML error at its node's
    line."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as err:  # noqa: BLE001 - every constructor failure is the file's
            value = node.value if isinstance(node, yaml.ScalarNode) else node.tag
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {_describe_value(value)} as "
                f"{node.tag.rsplit(':', 1)[-1]}: {err}", node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        digits = re.sub(r"[^0-9a-fA-F]", "", str(node.value))
        if len(digits) > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a whole number of {len(digits):,} digits; at most "
                f"{MAX_INT_DIGITS} are read", node.start_mark)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == \
                    "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} (first on line "
                    f"{seen[key_node.value]}); give each key once", key_node.start_mark)
            seen[key_node.value] = line
        return super().construct_mapping(node, deep)


def _refuse_tag(loader: SpecLoader, node: yaml.Node) -> Any:
    raise yaml.constructor.ConstructorError(
        None, None, f"the tag !!{node.tag.rsplit(':', 1)[-1]} is not read here; write the "
        "value as plain text, a number, a list or a mapping", node.start_mark)


SpecLoader.add_constructor("tag:yaml.org,2002:int", SpecLoader.construct_yaml_int)
for _tag in REFUSED_TAGS:
    SpecLoader.add_constructor(_tag, _refuse_tag)


def _describe_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class YamlError(UserError):
    """YAML that cannot be used: malformed, too large once expanded, or self-referencing."""

    def __init__(self, problem: str, source: str | None = None, line: int | None = None,
                 column: int | None = None, malformed: bool = False):
        self.problem, self.source, self.line, self.column = problem, source, line, column
        self.malformed = malformed
        super().__init__((f"{source}: " if source else "") + self.describe())

    @property
    def where(self) -> str:
        return f"line {self.line}" + (f", column {self.column}" if self.column else "") \
            if self.line else ""

    def describe(self, what: str | None = None) -> str:
        """The problem without the source: "malformed YAML [in <what>] at line L, column C:
        <detail>", or "<problem> [in <what>] (at line L, column C)"."""
        inside = f" in {what}" if what else ""
        if self.malformed:
            at = f" at {self.where}" if self.where else ""
            return f"malformed YAML{inside}{at}: {self.problem}"
        return f"{self.problem}{inside}" + (f" (at {self.where})" if self.where else "")


def _at(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def check_node(root: yaml.Node | None, source: str | None = None,
               max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> int:
    """The number of nodes `root` expands to; YamlError if it refers to itself, nests deeper
    than `max_depth` or expands beyond `max_nodes`."""
    if root is None:
        return 0
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise YamlError("an alias refers to a node that contains it (self-reference); "
                            "YAML specs cannot be recursive", source, *_at(node))
        if depth > max_depth:
            raise YamlError(f"nested more than {max_depth} levels deep", source, *_at(node))
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            on_path.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [
                part for pair in node.value for part in pair]
            for child in children:
                total += size(child, depth + 1)
                if total > max_nodes:
                    raise YamlError(f"expands to more than {max_nodes:,} values once its "
                                    "aliases (*name) are resolved; write it out or use fewer "
                                    "aliases", source, *_at(node))
            on_path.discard(key)
        sizes[key] = total
        return total

    return size(root, 0)


_CParser: Any = yaml.cyaml.CParser if yaml.__with_libyaml__ else object


class _FastComposer(_CParser, yaml.resolver.Resolver):
    """libyaml's parser and composer (C, some ten times faster) with SpecLoader's
    resolvers; only used once the nesting is known to be bounded (its composer recurses
    in C, where a deep document would overflow the stack)."""

    yaml_implicit_resolvers = SpecLoader.yaml_implicit_resolvers

    def __init__(self, stream: str):
        _CParser.__init__(self, stream)
        yaml.resolver.Resolver.__init__(self)


def _compose(text: str) -> yaml.Node | None:
    """Compose `text`: with libyaml after a pass over its events has bounded the nesting
    (_TooDeep at the first event deeper than MAX_DEPTH), else with SpecLoader."""
    if not yaml.__with_libyaml__:
        return yaml.compose(text, Loader=SpecLoader)
    depth = 0
    for event in yaml.parse(text, Loader=_FastComposer):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooDeep(event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.compose(text, Loader=_FastComposer)


def compose(text: str, source: str | None = None) -> yaml.Node | None:
    """The checked node graph of `text` (None for an empty document)."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"{len(text):,} characters is more than the {MAX_BYTES:,} allowed",
                        source)
    try:
        node = _compose(text)
    except _TooDeep as err:
        raise YamlError(f"nested more than {MAX_DEPTH} levels deep", source,
                        *((err.mark.line + 1, err.mark.column + 1) if err.mark else
                          (None, None))) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise YamlError(err.problem or err.context or "syntax error", source,
                        *((mark.line + 1, mark.column + 1) if mark else (None, None)),
                        malformed=True) from None
    except yaml.YAMLError as err:
        raise YamlError(str(err), source, malformed=True) from None
    except RecursionError:
        raise YamlError(f"nested more than {MAX_DEPTH} levels deep", source) from None
    check_node(node, source)
    return node


def construct(node: yaml.Node | None, source: str | None = None) -> Any:
    """Python data of a checked node graph (plain dicts, lists and scalars)."""
    if node is None:
        return None
    loader = SpecLoader("")
    try:
        return loader.construct_document(node)
    except RecursionError:
        raise YamlError(f"nested more than {MAX_DEPTH} levels deep", source) from None
    except yaml.YAMLError as err:  # well-formed YAML whose value cannot be built
        mark = getattr(err, "problem_mark", None)
        raise YamlError(str(getattr(err, "problem", None) or err), source,
                        *((mark.line + 1, mark.column + 1) if mark else (None, None))) from None
    finally:
        loader.dispose()


def load_yaml(text: str, source: str | None = None) -> tuple[Any, yaml.Node | None]:
    """(data, node graph) of `text`, checked as described above."""
    node = compose(text, source)
    return construct(node, source), node


def safe_load(text: str, source: str | None = None) -> Any:
    """Like `yaml.safe_load`, with the bounds above."""
    return load_yaml(text, source)[0]


def read_text(path: Path, source: str | None = None) -> str:
    """A YAML file's text, its size checked before it is read (never more than MAX_BYTES
    are read, even from a file that grows meanwhile); OSError / UnicodeDecodeError pass
    through."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YamlError(f"{size:,} bytes is more than the {MAX_BYTES:,} allowed",
                        source or str(path))
    with path.open("rb") as file:
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YamlError(f"more than the {MAX_BYTES:,} bytes allowed", source or str(path))
    return data.decode("utf-8")


def load_yaml_file(path: Path, source: str | None = None) -> Any:
    """The checked YAML data of a file (OSError / UnicodeDecodeError pass through)."""
    return safe_load(read_text(path, source), source or str(path))


def read_yaml_file(path: Path, what: str, error: type[UserError] = UserError) -> Any:
    """The checked YAML data of a file; a missing, unreadable, malformed or hostile file
    raises `error` naming the file, what it is (`what`, e.g. "prompt template") and the
    line."""
    try:
        return load_yaml_file(path)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except YamlError as err:
        raise error(f"{path}: {err.describe(what)}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: cannot read {what}: {err}") from None

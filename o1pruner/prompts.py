"""Prompt templates: how a problem becomes the text a model is asked to continue.

A template is a small YAML file in `templates/prompts/<name>.yaml` (or any file a spec
points to with `model.prompt_template: path/to/file.yaml`):

```yaml
name: my-model              # how specs refer to it
description: what it is for
match: [my-model]           # substrings of the model name that pick it under `auto`
system: "You are ..."       # system prompt, or null for none (the chat template's own)
user: "{problem}"           # the user turn; `{problem}` is replaced, other braces kept
suffix: "\nPlease reason step by step, ..."  # appended to the user turn (default "")
```

The model tokenizer's chat template then turns [system?, user] into the prompt string,
with the assistant turn opened (`add_generation_prompt=True`). Training reuses the exact
string written at pre-sampling time, so the two never drift apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import o1pruner
from o1pruner.errors import UserError
from o1pruner.safeyaml import read_yaml_file
from o1pruner.spec import ModelSpec

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(o1pruner.__file__).resolve().parents[1] / "templates" / "prompts"
DEFAULT_TEMPLATE = "generic"
PROBLEM_FIELD = "{problem}"

#: The paper's Fast-Solving Prompt baseline instruction, verbatim (appended to the user turn).
FAST_SOLVING_SUFFIX = (
    "\nBe confident. Solving this problem quickly with less pause, stop or reflection."
)

_REQUIRED = ("name", "user")
_KNOWN = {"name", "description", "match", "system", "user", "suffix"}
_warned_no_chat_template: set[str] = set()


@dataclass(frozen=True)
class PromptTemplate:
    """A system prompt, a user-turn template with `{problem}`, and a suffix."""

    name: str
    system: str | None
    user: str
    suffix: str = ""
    description: str = ""
    match: tuple[str, ...] = ()

    def user_turn(self, problem: str, extra_suffix: str = "") -> str:
        """The user message for `problem` (braces in the problem are kept as they are)."""
        return self.user.replace(PROBLEM_FIELD, problem) + self.suffix + extra_suffix


# ------------------------------------------------------------------------------ loading
def _parse_template(path: Path) -> PromptTemplate:
    """Read and validate one template file; every mistake names the file and the field."""
    data = read_yaml_file(path, "prompt template (model.prompt_template)")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a prompt template must be a mapping with fields "
                        f"{', '.join(sorted(_KNOWN))}; got {type(data).__name__}")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise UserError(f"{path}: unknown field(s) {', '.join(map(str, unknown))}; allowed: "
                        f"{', '.join(sorted(_KNOWN))}")
    for key in _REQUIRED:
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"{path}: field `{key}` is required and must be a non-empty string")
    if PROBLEM_FIELD not in data["user"]:
        raise UserError(f"{path}: field `user` must contain {PROBLEM_FIELD} (where the "
                        f"problem goes); got {data['user']!r}")
    for key in ("system", "suffix", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UserError(f"{path}: field `{key}` must be a string or null; "
                            f"got {type(data[key]).__name__}")
    match = data.get("match") or []
    if isinstance(match, str):
        match = [match]
    if not isinstance(match, list) or not all(isinstance(m, str) and m for m in match):
        raise UserError(f"{path}: field `match` must be a list of non-empty strings")
    return PromptTemplate(
        name=data["name"],
        system=data.get("system"),
        user=data["user"],
        suffix=data.get("suffix") or "",
        description=(data.get("description") or "").strip(),
        match=tuple(m.lower() for m in match),
    )


def _builtin_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TEMPLATES_DIR.glob("*.yaml"))}


def list_templates() -> list[str]:
    """Names of the templates shipped in templates/prompts/ (what `prompt_template` takes)."""
    return list(_builtin_paths())


def get_template(name: str) -> PromptTemplate:
    """A built-in template by name."""
    paths = _builtin_paths()
    if name not in paths:
        raise UserError(f"model.prompt_template: unknown template {name!r}; available: "
                        f"{', '.join(paths)}, auto, or a path to a template file ending in .yaml")
    return _parse_template(paths[name])


def match_template(model_name: str) -> PromptTemplate:
    """The built-in template whose longest `match` substring occurs in `model_name`
    (case-insensitive), else the generic one. Longest wins so that e.g.
    `DeepSeek-R1-Distill-Qwen-7B` gets deepseek-r1 rather than a Qwen template."""
    lowered = model_name.lower()
    best: tuple[int, str] | None = None
    templates = {name: _parse_template(path) for name, path in _builtin_paths().items()}
    for name, tmpl in templates.items():
        for sub in tmpl.match:
            if sub in lowered and (best is None or len(sub) > best[0]):
                best = (len(sub), name)
    if best is None:
        return templates.get(DEFAULT_TEMPLATE) or get_template(DEFAULT_TEMPLATE)
    return templates[best[1]]


def load_template(model: ModelSpec) -> PromptTemplate:
    """The template a model spec asks for (`auto`, a name, or a YAML path), with
    `model.system_prompt` overriding the template's system prompt when set."""
    ref = model.prompt_template
    if ref == "auto":
        template = match_template(model.name_or_path)
        logger.info("prompt template %s chosen for model %s", template.name, model.name_or_path)
    elif ref in _builtin_paths():
        template = get_template(ref)
    elif ref.endswith((".yaml", ".yml")):  # only a template file; never any other file
        template = _parse_template(Path(ref).expanduser())
    else:
        get_template(ref)  # raises the error that lists the available names
        raise AssertionError("unreachable")
    if model.system_prompt is not None:
        template = replace(template, system=model.system_prompt)
    return template


# ------------------------------------------------------------------------------ building
def build_messages(template: PromptTemplate, problem: str,
                   extra_suffix: str = "") -> list[dict[str, str]]:
    """The chat messages [system?, user] for one problem."""
    messages = [] if template.system is None else [{"role": "system", "content": template.system}]
    messages.append({"role": "user", "content": template.user_turn(problem, extra_suffix)})
    return messages


def build_prompt(tokenizer: Any, template: PromptTemplate, problem: str,
                 extra_suffix: str = "", thinking: str = "auto") -> str:
    """The prompt text for `problem`: the tokenizer's chat template applied to
    [system?, user] with the assistant turn opened (and, for templates with Qwen3's
    switch, thinking turned on or off by `thinking`, see o1pruner.thinking). A tokenizer
    without a chat template gets a plain "{system}\\n\\n{user}\\n" (a warning is logged
    once per tokenizer)."""
    from o1pruner.thinking import template_kwargs

    extra = template_kwargs(tokenizer, thinking)
    messages = build_messages(template, problem, extra_suffix)
    if not getattr(tokenizer, "chat_template", None):
        key = str(getattr(tokenizer, "name_or_path", id(tokenizer)))
        if key not in _warned_no_chat_template:
            _warned_no_chat_template.add(key)
            logger.warning("tokenizer %s has no chat template; using plain text prompts "
                           "(system, blank line, user)", key)
        return "\n\n".join(m["content"] for m in messages) + "\n"
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True, **extra)
    except Exception as err:  # e.g. templates that reject a system role
        if template.system is None:
            raise UserError(f"the tokenizer's chat template failed on a user message: "
                            f"{err}") from err
        logger.warning("chat template rejected the system prompt (%s); putting it at the "
                       "start of the user turn", err)
        merged = [{"role": "user",
                   "content": template.system + "\n\n" + messages[-1]["content"]}]
        text = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True,
                                             **extra)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text

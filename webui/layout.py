"""Where each spec field shows in the Build tab, and when it is hidden.

The method's own knobs are on the first screen; every other field is in a collapsed
"Advanced" accordion of its section, and the fields that spread work over GPUs, replicas
and machines share one accordion. A field is hidden while it does not apply: a
"<value> only:" field (LoRA, freeze, DPO and sampling options) unless its choice field
holds <value>, and the DeepSpeed options on one device of a machine without CUDA (unless
they are set). Field names here only place fields; types, defaults and help come from
the spec through `webui.form`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from webui import form
from webui.form import Leaf

FIRST = "first"
SCALE_OUT = "scale-out"
# the O1-Pruner method's own knobs: model, data, K, lambda, m, epsilon, fine-tuning mode, rounds
FIRST_SCREEN = ("model.name_or_path", "data.train", "presample.k", "reward.lambda",
                "reward.samples_per_problem", "train.epsilon", "train.finetuning", "run.rounds",
                "run.name")
SCALE_OUT_NAMES = re.compile(r"tensor_parallel_size|data_parallel_size|gpu_memory_utilization|"
                             r"ray_address|devices|num_machines|machine_rank|main_process_ip|"
                             r"main_process_port|deepspeed_\w+")
CUDA_ONLY_NAMES = re.compile(r"deepspeed_\w+")  # hidden on one CPU-only device unless set


def group_of(leaf: Leaf) -> str:
    if leaf.key in FIRST_SCREEN:
        return FIRST
    if SCALE_OUT_NAMES.fullmatch(leaf.name):
        return SCALE_OUT
    return leaf.section if leaf.section != form.GENERAL else "run"


def groups(all_leaves: Sequence[Leaf] | None = None) -> dict[str, list[Leaf]]:
    """Leaves by group: the first screen (in FIRST_SCREEN order), then each section's
    advanced fields in spec order, then the scale-out fields."""
    all_leaves = list(all_leaves if all_leaves is not None else form.leaves())
    by_key = {leaf.key: leaf for leaf in all_leaves}
    out: dict[str, list[Leaf]] = {FIRST: [by_key[k] for k in FIRST_SCREEN]}
    for section in form.sections(all_leaves):  # spec order; top-level fields go to "run"
        if section != form.GENERAL:
            out[section] = []
    out[SCALE_OUT] = []
    for leaf in all_leaves:
        if group_of(leaf) != FIRST:
            out.setdefault(group_of(leaf), []).append(leaf)
    return {group: members for group, members in out.items() if members}


def group_title(group: str) -> str:
    if group == SCALE_OUT:
        return "Advanced · GPUs, replicas and machines"
    return f"Advanced · {form.section_title(group)}"


def has_cuda() -> bool:
    """Whether this machine has an NVIDIA driver (no torch import just to draw a form)."""
    return _nvidia_present()


@functools.cache
def _nvidia_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


def can_hide(leaf: Leaf, conds: Mapping[str, tuple[str, str]] | None = None) -> bool:
    """Whether the field's visibility depends on other values (see `visibility`)."""
    return leaf.key in (form.conditions() if conds is None else conds) or bool(
        CUDA_ONLY_NAMES.fullmatch(leaf.name))


def controllers(all_leaves: Sequence[Leaf] | None = None) -> list[str]:
    """The fields whose value shows or hides others."""
    all_leaves = list(all_leaves if all_leaves is not None else form.leaves())
    keys = {owner for owner, _ in form.conditions(all_leaves).values()}
    for leaf in all_leaves:
        if CUDA_ONLY_NAMES.fullmatch(leaf.name):
            keys |= {f"{leaf.section}.devices", f"{leaf.section}.num_machines"}
    return [leaf.key for leaf in all_leaves if leaf.key in keys]


def visibility(by_key: Mapping[str, Any], cuda: bool | None = None,
               all_leaves: Sequence[Leaf] | None = None) -> dict[str, bool]:
    """{field: shown} for every field that can hide, given the form's values by key."""
    all_leaves = list(all_leaves if all_leaves is not None else form.leaves())
    conds = form.conditions(all_leaves)
    cuda = has_cuda() if cuda is None else cuda
    out: dict[str, bool] = {}
    for leaf in all_leaves:
        if leaf.key in conds:
            out[leaf.key] = form.applies(leaf.key, by_key, conds)
        elif CUDA_ONLY_NAMES.fullmatch(leaf.name):
            several = any(str(by_key.get(f"{leaf.section}.{n}", 1)).strip() not in ("1", "")
                          for n in ("devices", "num_machines"))
            default = form.to_widget(leaf, leaf.info.get_default(call_default_factory=True))
            out[leaf.key] = cuda or several or str(by_key.get(leaf.key)) != str(default)
    return out

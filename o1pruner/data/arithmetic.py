"""Seeded arithmetic word problems: the project's own training and test data.

Each problem is a short story ("Mia has 12 apples. She buys 7 more and then gives 5 to
her friend. How many apples does she have now?") built from structured steps, so the
answer is computed exactly and can be re-checked from the steps. Small models solve these
in a few dozen tokens, which makes a full presample -> train -> eval cycle fit on a CPU.

Determinism: only `random.Random(seed)` draws (no `hash()`, no set ordering), so the same
options give the same problems on every run and platform. Generating `n` problems gives
the first `n` of any larger request with the same seed. A `partition` ("train"/"test")
keeps only texts whose blake2b digest falls in that half, so a train set and a test set
never share a problem text, whatever their seeds and sizes.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass

from o1pruner.errors import DataError
from o1pruner.spec import ArithmeticOptions

logger = logging.getLogger(__name__)

# Bump when templates or drawing change: it is part of the data set fingerprint.
GENERATOR_VERSION = 1

OPS = ("add", "sub", "mul", "div", "add_groups", "sub_groups")
PARTITIONS = ("train", "test")

_PEOPLE = (
    ("Mia", "she", "her"), ("Liam", "he", "his"), ("Ava", "she", "her"),
    ("Noah", "he", "his"), ("Zoe", "she", "her"), ("Omar", "he", "his"),
    ("Lena", "she", "her"), ("Ravi", "he", "his"), ("Sofia", "she", "her"),
    ("Kenji", "he", "his"), ("Amara", "she", "her"), ("Mateo", "he", "his"),
)
_ITEMS = (
    ("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"),
    ("pencil", "pencils"), ("cookie", "cookies"), ("book", "books"), ("coin", "coins"),
    ("stamp", "stamps"), ("seashell", "seashells"), ("card", "cards"),
    ("balloon", "balloons"), ("crayon", "crayons"),
)
_CONTAINERS = (("bag", "bags"), ("box", "boxes"), ("pack", "packs"), ("jar", "jars"))
_GET = ("buys {k} more", "finds {k} more", "gets {k} more from {pos} neighbour",
        "receives {k} more as a gift", "picks up {k} more")
_LOSE = ("gives {k} to {pos} friend", "loses {k}", "sells {k}", "gives away {k}",
         "uses {k} for a school project")
_MUL = ("ends up with {k} times as many as before", "collects more until {pro} has {k} "
        "times as many as before")
_DIV = ("splits them into {k} equal piles and keeps one pile",
        "shares them equally with {n_others} {friends}, keeping one equal share")
_ADD_GROUPS = ("buys {k} {cont} with {m} {items} in each",
               "receives {k} {cont} holding {m} {items} each")
_SUB_GROUPS = ("gives {m} {items} to each of {k} friends",
               "hands out {m} {items} per child to {k} children")
_JOINERS = ("Then {pro}", "After that, {pro}", "Next, {pro}")
_MUL_CAP = 10  # largest multiplier / divisor tried; larger ones make unreadable stories
_DIV_CAP = 50
_MAX_MISSES = 5000  # consecutive draws without a new problem: the knobs' space is used up


@dataclass(frozen=True)
class Step:
    """One arithmetic step applied to the running count: `op` over `operands`.

    add (k): +k; sub (k): -k; mul (k): *k; div (k): /k (exact);
    add_groups (k, m): +k*m; sub_groups (k, m): -k*m.
    """

    op: str
    operands: tuple[int, ...]


@dataclass(frozen=True)
class ArithmeticProblem:
    """A generated problem with its structure: start value, steps and exact answer."""

    id: str
    text: str
    start: int
    steps: tuple[Step, ...]
    answer: int


def apply_step(value: int, step: Step) -> int:
    """The running count after `step` (integers only; division must be exact)."""
    op, args = step.op, step.operands
    if op == "add":
        return value + args[0]
    if op == "sub":
        return value - args[0]
    if op == "mul":
        return value * args[0]
    if op == "div":
        if value % args[0]:
            raise ValueError(f"{value} is not divisible by {args[0]}")
        return value // args[0]
    if op == "add_groups":
        return value + args[0] * args[1]
    if op == "sub_groups":
        return value - args[0] * args[1]
    raise ValueError(f"unknown op {op!r}")


def in_partition(text: str, partition: str | None) -> bool:
    """Whether `text` belongs to a partition: a stable digest bit, independent of seed."""
    if partition is None:
        return True
    bit = hashlib.blake2b(text.encode("utf-8"), digest_size=1).digest()[0] & 1
    return bit == PARTITIONS.index(partition)


def _feasible_steps(rng: random.Random, value: int, max_op: int) -> list[Step]:
    """Draw one candidate step per op that keeps the count a non-negative integer."""
    steps = [Step("add", (rng.randint(1, max_op),))]
    if value >= 1:
        steps.append(Step("sub", (rng.randint(1, min(value, max_op)),)))
        steps.append(Step("mul", (rng.randint(2, min(max_op, _MUL_CAP)),)))
        divisors = [k for k in range(2, min(max_op, _DIV_CAP, value) + 1) if value % k == 0]
        if divisors:
            steps.append(Step("div", (rng.choice(divisors),)))
    top = min(max_op, _MUL_CAP)
    steps.append(Step("add_groups", (rng.randint(2, top), rng.randint(2, max_op))))
    if value >= 4:
        k = rng.randint(2, min(top, value // 2))
        steps.append(Step("sub_groups", (k, rng.randint(1, min(max_op, value // k)))))
    return steps


def _noun(count: int, item: tuple[str, str]) -> str:
    return f"{count} {item[0] if count == 1 else item[1]}"


def _clause(rng: random.Random, step: Step, pro: str, pos: str,
            item: tuple[str, str]) -> str:
    """The English clause for one step, in the present tense, without a subject."""
    a = step.operands
    if step.op == "add":
        return rng.choice(_GET).format(k=a[0], pos=pos)
    if step.op == "sub":
        return rng.choice(_LOSE).format(k=a[0], pos=pos)
    if step.op == "mul":
        return rng.choice(_MUL).format(k=a[0], pro=pro)
    if step.op == "div":
        friends = "friend" if a[0] == 2 else "friends"
        return rng.choice(_DIV).format(k=a[0], n_others=a[0] - 1, friends=friends)
    cont = rng.choice(_CONTAINERS)
    template = rng.choice(_ADD_GROUPS if step.op == "add_groups" else _SUB_GROUPS)
    noun = item[0] if a[1] == 1 else item[1]
    return template.format(k=a[0], m=a[1], cont=cont[0] if a[0] == 1 else cont[1],
                           items=noun)


def _draw(rng: random.Random, options: ArithmeticOptions) -> tuple[str, int, tuple[Step, ...]]:
    """One problem: text, start value and steps."""
    name, pro, pos = rng.choice(_PEOPLE)
    item = rng.choice(_ITEMS)
    value = start = rng.randint(1, options.max_operand)
    steps: list[Step] = []
    for _ in range(rng.randint(options.min_steps, options.max_steps)):
        step = rng.choice(_feasible_steps(rng, value, options.max_operand))
        value = apply_step(value, step)
        steps.append(step)
    clauses = [_clause(rng, s, pro, pos, item) for s in steps]
    if len(clauses) <= 2:
        body = f"{pro.capitalize()} {' and then '.join(clauses)}."
    else:
        body = f"{pro.capitalize()} {clauses[0]}. " + " ".join(
            f"{rng.choice(_JOINERS).format(pro=pro)} {c}." for c in clauses[1:-1]
        ) + f" Finally, {pro} {clauses[-1]}."
    verb = "does" if pro in ("she", "he") else "do"
    text = (f"{name} has {_noun(start, item)}. {body} "
            f"How many {item[1]} {verb} {pro} have now?")
    return text, start, tuple(steps)


def generate_arithmetic(
    options: ArithmeticOptions, partition: str | None = None, n: int | None = None
) -> list[ArithmeticProblem]:
    """Generate `n` (default options.n) unique problems from `options.seed`.

    Deterministic; a shorter request is a prefix of a longer one. `partition` keeps only
    problems on one side of a fixed text split, so "train" and "test" sets are disjoint.
    Raises DataError when the knobs allow too few distinct problems.
    """
    if partition not in (None, *PARTITIONS):
        raise DataError(f"arithmetic partition: {partition!r} is not one of {PARTITIONS}")
    want = options.n if n is None else min(n, options.n)
    rng = random.Random(options.seed)
    seen: set[str] = set()
    problems: list[ArithmeticProblem] = []
    attempts = misses = 0
    while len(problems) < want:
        attempts += 1
        if misses > _MAX_MISSES:
            raise DataError(
                f"arithmetic generator: only {len(problems)} distinct problems found for n="
                f"{options.n} (seed {options.seed}, steps {options.min_steps}-"
                f"{options.max_steps}, max_operand {options.max_operand}); raise "
                "max_operand or max_steps, or lower n"
            )
        text, start, steps = _draw(rng, options)
        if text in seen or not in_partition(text, partition):
            misses += 1
            continue
        misses = 0
        seen.add(text)
        value = start
        for step in steps:
            value = apply_step(value, step)
        problems.append(ArithmeticProblem(
            id=f"arith-s{options.seed}-{len(problems)}", text=text, start=start,
            steps=steps, answer=value,
        ))
    logger.debug("generated %d arithmetic problems in %d draws", len(problems), attempts)
    return problems

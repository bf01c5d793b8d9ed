"""The house: the job layer is one package with one entry, and the layers point one way.

Read from the source (every `import`, at the top of a module or inside a function) and
checked by importing in a fresh interpreter, so an import-order accident cannot hide a
circle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "o1pruner" / "jobs"
JOB_MODULES = sorted(f"o1pruner.jobs.{p.stem}" for p in JOBS.glob("*.py") if p.stem != "__init__")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in it (`from a import b` counts as a.b too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def test_the_job_layer_is_one_package_and_its_old_modules_are_gone() -> None:
    assert {m.rsplit(".", 1)[1] for m in JOB_MODULES} == {
        "control", "history", "lock", "procs", "progress", "rundir", "worker"}
    for old in ("rundir", "procs", "joblock", "job", "jobs", "progress", "history"):
        assert not (REPO / "o1pruner" / f"{old}.py").exists(), f"o1pruner/{old}.py is back"


def test_code_outside_the_job_package_enters_it_only_through_o1pruner_jobs() -> None:
    reaching_in = {
        f"{path.relative_to(REPO)}: {name}"
        for path in _sources("o1pruner", "webui", "benchmarks")
        if JOBS not in path.parents
        for name in _imports(path) if name in JOB_MODULES}
    assert not reaching_in


def test_the_engine_never_imports_the_web_ui() -> None:
    """Only the `o1pruner webui` command starts it (`cli.cmd_webui`, inside the function)."""
    upward = {f"{path.relative_to(REPO)}: {name}" for path in _sources("o1pruner")
              for name in _imports(path) if name == "webui" or name.startswith("webui.")}
    assert upward <= {"o1pruner/cli.py: webui.app", "o1pruner/cli.py: webui.app.launch"}
    cli = ast.parse((REPO / "o1pruner" / "cli.py").read_text())
    assert not [n for n in cli.body if isinstance(n, ast.ImportFrom)
                and (n.module or "").startswith("webui")]


def test_no_circle_inside_the_job_package() -> None:
    graph = {_module_name(p): {n for n in _imports(p) if n in JOB_MODULES}
             for p in JOBS.glob("*.py") if p.stem != "__init__"}
    # a module inside the package imports its siblings, never the package's entry
    for path in JOBS.glob("*.py"):
        if path.stem != "__init__":
            assert "o1pruner.jobs" not in _imports(path), path.name

    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        if module not in done:
            for nxt in graph[module]:
                visit(nxt, (*trail, module))
            done.add(module)

    for module in graph:
        visit(module, ())


@pytest.mark.parametrize("module", ["o1pruner.jobs", *JOB_MODULES])
def test_each_job_module_imports_alone_without_the_ui_or_a_stage(module: str) -> None:
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('o1pruner', 'webui', 'gradio', 'torch'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert set(loaded) <= {"o1pruner", "o1pruner.errors", "o1pruner.files",
                           "o1pruner.safeyaml", "o1pruner.jobs", *JOB_MODULES}, loaded


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The o1pruner modules `path` imports when it is imported: its module-level imports,
    not those inside functions (a stage's lazy imports) or under `if TYPE_CHECKING:`."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def test_no_import_circle_in_the_engine() -> None:
    """No module of o1pruner imports, when it is loaded, one that imports it back (the
    sweep <-> sweep report circle of issue #30 is gone: the report gets the points' states
    from o1pruner.sweep.write_report)."""
    paths = {_module_name(p): p for p in _sources("o1pruner")}
    graph = {m: _top_level_imports(p, set(paths)) - {m} for m, p in paths.items()}
    done: set[str] = set()

    def visit(module: str, trail: tuple[str, ...]) -> None:
        assert module not in trail, " -> ".join((*trail, module))
        if module not in done:
            for nxt in sorted(graph[module]):
                visit(nxt, (*trail, module))
            done.add(module)

    for module in sorted(graph):
        visit(module, ())
    # and the report never reaches back into the sweep, not even inside a function
    report = ast.parse(paths["o1pruner.sweep_report"].read_text())
    typing_only = {id(n) for block in report.body if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING"
                   for n in ast.walk(block)}
    assert not [n.lineno for n in ast.walk(report) if isinstance(n, ast.ImportFrom)
                and n.module == "o1pruner.sweep" and id(n) not in typing_only]

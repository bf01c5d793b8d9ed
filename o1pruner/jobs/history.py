"""The run history: one row per run directory (and per ad-hoc evaluation), for the web UI
and `o1pruner runs`. A run whose files cannot be read is a row that says so; it never
breaks the listing of the others.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.files import CorruptFileError, load_json
from o1pruner.jobs.control import ACTIVE_STATES, status
from o1pruner.jobs.lock import RunLock
from o1pruner.jobs.rundir import ADHOC_DIR, EXPORTS_DIR, RunDir
from o1pruner.safeyaml import YamlError, load_yaml_file

logger = logging.getLogger(__name__)

KEY_PARAMETERS = {
    "K": ("presample", "k"), "lambda": ("reward", "lambda"), "method": ("train", "method"),
    "finetuning": ("train", "finetuning"), "lr": ("train", "learning_rate"),
    "train_limit": ("data", "train_limit"),
}


def _spec_data(run: RunDir) -> tuple[dict[str, Any], str | None]:
    """(spec.yaml as data, the reason it cannot be read or None)."""
    try:
        data = load_yaml_file(run.spec_path)
    except FileNotFoundError:
        return {}, None
    except (YamlError, OSError, UnicodeDecodeError) as err:
        return {}, f"spec.yaml: {err}"
    if not isinstance(data, dict):
        return {}, "spec.yaml: not a mapping"
    return data, None


def headline_results(results: Any) -> str:
    """One line from results.json: accuracy / mean tokens / AES of each method (AVG)."""
    if not isinstance(results, dict) or "methods" not in results:
        return ""
    try:
        from o1pruner.evaluation.report import results_rows

        avg = [r for r in results_rows(results) if r.get("benchmark") == "AVG"]
    except (ImportError, KeyError, TypeError, ValueError) as err:
        logger.debug("results.json not in the evaluation format: %s", err)
        return ""
    return "; ".join(f"{r['method']}: acc {r['accuracy %']}% / {r['mean tokens']} tok"
                     + (f" / AES {r['AES']}" if r.get("AES") is not None else "") for r in avg)


def _results(path: Path) -> tuple[str, str | None]:
    try:
        return headline_results(load_json(path)), None
    except FileNotFoundError:
        return "", None
    except CorruptFileError as err:
        return "", str(err)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def run_summary(run: RunDir, kind: str = "run") -> dict[str, Any]:
    """One history row: name, kind, model, state, stage, created, key parameters, results.
    A file that cannot be read makes the state `unreadable` with the reason in `message`."""
    spec, spec_problem = _spec_data(run)
    job = status(run)
    results, results_problem = _results(run.results_path)
    params = {}
    for label, (section, key) in KEY_PARAMETERS.items():
        value = spec.get(section, {}).get(key) if isinstance(spec.get(section), dict) else None
        if value is not None and kind == "run":  # a whole float as an integer (2, not 2.0)
            params[label] = int(value) if isinstance(value, float) and value.is_integer() \
                else value
    problems = [p for p in (job["message"] if job["state"] == "unreadable" else None,
                            spec_problem, results_problem) if p]
    state = "unreadable" if problems and not job.get("alive") else job["state"]
    created = job.get("started_at") or _mtime(run.spec_path) or _mtime(run.root)
    model = spec.get("model", {}).get("name_or_path", "") if isinstance(
        spec.get("model"), dict) else ""
    if kind == "eval":
        model = _adhoc_model(job) or model
    return {
        "name": run.root.name,
        "path": str(run.root),
        "kind": kind,
        "model": model,
        "state": state,
        "stage": job.get("stage") or "",
        "created": created if isinstance(created, (int, float)) else None,
        "parameters": params,
        "results": results,
        "message": "; ".join(problems) if state == "unreadable" else (job.get("message") or ""),
    }


def _adhoc_model(job: dict[str, Any]) -> str:
    """The --model of an ad-hoc evaluation's command."""
    command = job.get("command")
    if isinstance(command, list) and "--model" in command:
        i = command.index("--model")
        return str(command[i + 1]) if i + 1 < len(command) else ""
    return ""


def find_runs(roots: Iterable[Path | str]) -> list[tuple[RunDir, str]]:
    """(run directory, kind) for every run under the output roots and every ad-hoc
    evaluation inside them (kind "eval"). Symbolic links are not followed."""
    found: list[tuple[RunDir, str]] = []
    for root in dict.fromkeys(Path(r) for r in roots):
        if not root.is_dir():
            continue
        for path in root.iterdir():
            if not path.is_dir() or path.is_symlink() or path.name.startswith("."):
                continue
            run = RunDir(path)
            if not run.is_run():
                continue
            found.append((run, "run"))
            adhoc = path.joinpath(*ADHOC_DIR)
            if adhoc.is_dir() and not adhoc.is_symlink():
                found += [(RunDir(p), "eval") for p in adhoc.iterdir()
                          if p.is_dir() and not p.is_symlink() and RunDir(p).is_run()]
    return found


def list_runs(roots: Iterable[Path | str] | Path | str) -> list[dict[str, Any]]:
    """History rows of every run under the output root(s), newest first."""
    if isinstance(roots, (str, Path)):
        roots = [roots]
    rows = []
    for run, kind in find_runs(roots):
        try:
            rows.append(run_summary(run, kind))
        except Exception as err:  # noqa: BLE001 - a folder that vanished, cannot be read or
            # holds anything at all: a row that says so, never a listing (or a studio) down
            logger.warning("%s: %s", run.root, err, exc_info=not isinstance(err, OSError))
            rows.append({"name": run.root.name, "path": str(run.root), "kind": kind,
                         "model": "", "state": "unreadable", "stage": "", "created": None,
                         "parameters": {}, "results": "", "message": str(err)})
    return sorted(rows, key=lambda r: r["created"] or 0, reverse=True)


def check_deletable(run: RunDir) -> None:
    """A UserError unless `run` is a run directory none of whose jobs is active: its own
    job, an ad-hoc evaluation of it (eval/adhoc/<name>) or an export of it
    (exports/<name>), each of which lives in the run's folder."""
    if not run.is_run():
        raise UserError(f"{run.root}: not a run directory (no spec.yaml or job.json)")
    inner = [run.root.joinpath(*ADHOC_DIR), run.root / EXPORTS_DIR]
    inner_jobs = [RunDir(p) for folder in inner if folder.is_dir() and not folder.is_symlink()
            for p in sorted(folder.iterdir()) if p.is_dir() and RunDir(p).is_run()]
    for job_dir in [run, *inner_jobs]:
        job = status(job_dir)
        if job["state"] in ACTIVE_STATES:
            what = ("the job" if job_dir == run else "an export of it" if
                    job_dir.root.parent.name == EXPORTS_DIR else "an evaluation of it")
            raise UserError(f"{run.root}: {what} is {job['state']} ({job_dir.root}); stop it "
                            "before deleting the run, or wait for it to end")


def delete_run(run: RunDir) -> None:
    """Remove a run directory (or an ad-hoc evaluation); refuses while a job of it runs
    (check_deletable). Holds the run's lock meanwhile, so no job can start in it while it
    is deleted."""
    check_deletable(run)
    with RunLock.acquire(run.lock_path, ["delete", str(run.root)]):
        shutil.rmtree(run.root)
    logger.info("deleted run %s", run.root)

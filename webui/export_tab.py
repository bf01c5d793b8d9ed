"""The "Export" tab: a run's trained model (final, a step model or a resumable checkpoint)
as a standalone Hugging Face folder inside the workspace, with its model card, and a zip
of it to download. The same as `o1pruner export` (docs/export.md).

The export runs as a detached job (`o1pruner export ...`, a job of <run>/exports/<name>/),
not inside the browser's request: exporting a 7B model takes minutes (loading, a LoRA
merge, writing gigabytes); as a job it survives a page reload or a UI restart, shows its
log while it works, cannot be started twice for the same output folder, and is the
command a user could type. The tab reads everything from the job's folder."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr

from o1pruner import jobs
from o1pruner.errors import UserError
from o1pruner.export import (
    EXPORTS_DIR,
    available_checkpoints,
    export_job_dir,
    plan_export,
    read_result,
)
from o1pruner.jobs import RunDir
from o1pruner.specio import SpecError, load_spec
from webui.workspace import Workspace

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
FINAL = "final"
AS_SAVED = "as saved"
ZIP_LIMIT_BYTES = 2 * 1024**3  # larger exports are copied from the machine, not downloaded
ZIP_CACHE_BYTES = 2 * ZIP_LIMIT_BYTES  # all zips kept for download together
ZIPS_DIR = "export-zips"  # under the workspace's served folder
LOG_LINES = 30
_zips: dict[tuple[str, float], str] = {}  # (export job, finished_at) -> zip path


# ------------------------------------------------------------------ plain logic (tested)
def exportable_runs(ws: Workspace) -> list[str]:
    """Runs of the workspace with something to export (train/final or a step, of any
    round)."""
    found = []
    for root in ws.output_roots():
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            run = RunDir(folder)
            if run.spec_path.exists() and _round_choices(run):
                found.append(ws.relative(folder))
    return found


def _round_choices(run: RunDir) -> list[tuple[str, str]]:
    """(label, value) of each model of each round of the run, the last round first. Values:
    `final` or a step for the last round (`o1pruner export`'s default), `R:final` or `R:N`
    for an earlier round R."""
    from o1pruner.rounds import round_dir

    try:
        rounds = load_spec(run.spec_path).run.rounds
    except (SpecError, UserError, OSError):
        rounds = 1
    choices = []
    for r in range(rounds, 0, -1):
        folder = round_dir(run, r)
        where = "train" if r == 1 else f"rounds/round-{r}/train"
        head, value = (f"round {r}: ", f"{r}:") if rounds > 1 else ("", "")
        value = "" if r == rounds else value
        if (folder.root / "train" / "final").is_dir():
            last = " (the run's trained model)" if rounds > 1 and r == rounds else ""
            choices.append((f"{head}final model ({where}/final){last}", value + FINAL))
        steps = available_checkpoints(folder)
        for step in sorted(set(steps["models"]) | set(steps["resumable"])):
            kind = "model" if step in steps["models"] else "resumable checkpoint"
            choices.append((f"{head}step {step} ({kind})", f"{value}{step}"))
    return choices


def checkpoint_choices(ws: Workspace, run_id: str | None) -> list[tuple[str, str]]:
    """(label, value) of what the run can be exported at: final, then each step (of each
    round, the last round first)."""
    return _round_choices(ws.run_dir(run_id)) if run_id else []


def parse_choice(value: str | None) -> tuple[int | None, int | None]:
    """(round, step) of a checkpoint choice; None: the last round, its final model."""
    text = (value or "").strip()
    round_text, _, rest = text.rpartition(":")
    try:
        round_ = int(round_text) if round_text else None
        step = None if rest in ("", FINAL) else int(rest)
    except ValueError:
        raise UserError(f"checkpoint {value!r}: not one of the choices; pick one in the "
                        "list") from None
    return round_, step


def is_lora(ws: Workspace, run_id: str | None) -> bool:
    """Whether the run trained a LoRA adapter (then its adapter or a merge is exported)."""
    if not run_id:
        return False
    return load_spec(ws.run_dir(run_id).spec_path).train.finetuning == "lora"


def default_out(run_id: str | None) -> str:
    return f"{EXPORTS_DIR}/{Path(run_id).name}" if run_id else ""


def export_argv(ws: Workspace, run_id: str, checkpoint: str | None, merge: bool,
                dtype: str | None, out_text: str, force: bool) -> tuple[RunDir, list[str]]:
    """Check the request as `o1pruner export` will (the output folder confined to the
    workspace) and return the export's job folder and its command line."""
    run = ws.run_dir(run_id)
    ws.confine(load_spec(run.spec_path), must_exist=False)  # as a Build-tab spec
    out = ws.resolve(out_text, "output folder")
    round_, step = parse_choice(checkpoint)
    dtype = None if dtype in (None, "", AS_SAVED) else dtype
    plan_export(run.root, out, checkpoint=step, merge_lora=bool(merge), dtype=dtype,
                force=bool(force), round=round_)
    argv = ["export", ws.relative(run.root), "--out", ws.relative(out)]
    argv += ["--round", str(round_)] if round_ is not None else []
    argv += ["--checkpoint", str(step)] if step is not None else []
    argv += ["--merge-lora"] if merge else []
    argv += ["--dtype", dtype] if dtype else []
    argv += ["--force"] if force else []
    return export_job_dir(run, out), argv


def start_export(ws: Workspace, *request: Any) -> tuple[str, str]:
    """Launch the export as a detached job; (message, the job's id)."""
    job, argv = export_argv(ws, *request)
    jobs.launch(job, argv, cwd=ws.root)
    return f"started `o1pruner {' '.join(argv)}`", ws.relative(job.root)


def export_job(ws: Workspace, job_id: str) -> RunDir:
    path = ws.resolve(job_id, "export")
    if path.parent.name != EXPORTS_DIR or path.parents[1].parent not in ws.output_roots():
        raise UserError(f"export {job_id!r}: not an export folder of this workspace's runs")
    return RunDir(path)


def latest_export(ws: Workspace, run_id: str | None) -> str | None:
    """The newest export job of a run (to re-attach after a reload), or None."""
    if not run_id:
        return None
    folder = ws.run_dir(run_id).root / EXPORTS_DIR
    jobs_found = [p for p in folder.iterdir() if (p / "job.json").exists()] if (
        folder.is_dir()) else []
    if not jobs_found:
        return None
    return ws.relative(max(jobs_found, key=lambda p: (p / "job.json").stat().st_mtime))


def export_view(ws: Workspace, job_id: str | None) -> dict[str, Any]:
    """What the tab shows of an export job: status line, log tail, files, the zip to
    download (once done and small enough), and whether it still runs."""
    if not job_id:
        return {"status": "", "log": "", "files": "", "zip": None, "active": False}
    job = export_job(ws, job_id)
    state = jobs.status(job)
    active = state["state"] in jobs.ACTIVE_STATES
    log = _tail(job.log_path("export")) or _tail(job.root / "logs" / jobs.WORKER_LOG)
    result = read_result(job) if state["state"] == "done" else None
    status = f"**export**: {state['state']}"
    if state.get("message"):
        status += f" · {state['message']}"
    if result:
        status += f" · {result['message'].replace(result['out'], ws.relative(Path(result['out'])))}"
    files, zip_path = "", None
    if result:
        out = Path(result["out"])
        files = "\n".join([f"`{ws.relative(out)}/`", ""] + [
            f"- `{name}` ({_size(out / name)})" for name in result["files"]])
        zip_path = _zip(ws, job, out, state.get("finished_at") or 0.0)
        if zip_path is None:
            files += (f"\n\n{_size_total(out)}: too large to download from the browser; "
                      f"copy `{ws.relative(out)}` from this machine")
    return {"status": status, "log": log, "files": files, "zip": zip_path, "active": active}


def _tail(path: Path, lines: int = LOG_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _size(path: Path) -> str:
    size = float(path.stat().st_size) if path.exists() else 0.0
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def _size_total(out: Path) -> str:
    total = sum(p.stat().st_size for p in _zip_files(out)) if out.is_dir() else 0
    return f"{total / 1024**3:.1f} GB"


def _zip_files(out: Path) -> list[Path]:
    """The regular files of an exported folder; symbolic links (to files or folders) are
    left out, so a zip never holds anything from outside the folder."""
    found = []
    for folder, dirs, names in os.walk(out, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if stat.S_ISREG(path.lstat().st_mode):
                found.append(path)
            else:
                logger.info("zip of %s: %s left out (a link or not a regular file)", out, path)
    return found


def _zip(ws: Workspace, job: RunDir, out: Path, finished: float) -> str | None:
    """A zip of the exported folder, made once per export under the served folder
    (.o1pruner/served/export-zips), or None when the folder is over ZIP_LIMIT_BYTES, gone
    or outside the workspace. A new zip of an export job replaces its earlier ones, and
    the oldest zips go while all of them hold more than ZIP_CACHE_BYTES."""
    key = (str(job.root), finished)
    if key in _zips and Path(_zips[key]).exists():
        return _zips[key]
    try:
        out = ws.resolve(out, "export")
    except UserError:
        return None
    if not out.is_dir():
        return None
    files = _zip_files(out)
    if sum(p.stat().st_size for p in files) > ZIP_LIMIT_BYTES:
        return None
    zips = ws.served_root / ZIPS_DIR
    mine = zips / hashlib.sha256(str(job.root).encode()).hexdigest()[:16]
    folder = mine / f"{finished:.3f}"
    path = folder / f"{out.name}.zip"
    tmp = folder / f"{out.name}.zip.partial"
    try:  # weights hardly compress: stored, so a big zip is quick
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
            for file in files:
                archive.write(file, f"{out.name}/{file.relative_to(out)}")
        os.replace(tmp, path)
    except OSError as err:
        shutil.rmtree(folder, ignore_errors=True)
        logger.warning("zip of %s failed: %s", out, err)
        return None
    for earlier in mine.iterdir():  # this export's earlier zips
        if earlier != folder:
            shutil.rmtree(earlier, ignore_errors=True)
    _prune_zips(zips, keep=path)
    _zips[key] = str(path)
    return str(path)


def _prune_zips(zips: Path, keep: Path) -> None:
    """Remove the oldest zips (never `keep`) while they hold more than ZIP_CACHE_BYTES."""
    found = sorted(zips.glob("*/*/*.zip"), key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in found)
    for path in found:
        if total <= ZIP_CACHE_BYTES:
            break
        if path != keep:
            total -= path.stat().st_size
            shutil.rmtree(path.parent, ignore_errors=True)


# ------------------------------------------------------------------------------- the tab
def export_tab(ws: Workspace) -> gr.Dropdown:
    """Build the tab's components and wire them; returns the run picker, which the app
    fills on page load and when the tab opens."""
    gr.Markdown("Export a run's trained model as a standalone Hugging Face folder "
                "(transformers and vLLM load it as it is), with a model card; LoRA runs "
                "export their adapter unless merged. The same as `o1pruner export` "
                "(docs/export.md); it runs as a job of its own, so you can leave the page.")
    runs = exportable_runs(ws)
    with gr.Row():
        run = gr.Dropdown(runs, value=None, label="run", scale=3, elem_id="model-export-run")
        checkpoint = gr.Dropdown([], label="checkpoint", scale=2,
                                 elem_id="model-export-checkpoint")
        refresh = gr.Button("Refresh", scale=0, elem_id="model-export-refresh")
    with gr.Row():
        out = gr.Textbox(label="output folder (inside the workspace)", scale=3,
                         elem_id="model-export-out")
        dtype = gr.Dropdown([AS_SAVED, "bf16", "fp16", "fp32"], value=AS_SAVED,
                            label="dtype", scale=1, elem_id="model-export-dtype")
        with gr.Column(scale=1):
            merge = gr.Checkbox(label="merge LoRA into the model (else: the adapter)",
                                visible=False, elem_id="model-export-merge")
            force = gr.Checkbox(label="replace an earlier export", elem_id="model-export-force")
    with gr.Row():
        start = gr.Button("Export", variant="primary", scale=0, elem_id="model-export-start")
        message = gr.Markdown(elem_id="model-export-message")
    status = gr.Markdown(elem_id="model-export-status")
    with gr.Row():
        files = gr.Markdown(elem_id="model-export-files")
        download = gr.DownloadButton("Download .zip", visible=False, scale=0,
                                     elem_id="model-export-download")
    log = gr.Textbox(label="log", lines=8, max_lines=8, interactive=False, autoscroll=True,
                     elem_id="model-export-log")
    watched = gr.State(None)
    timer = gr.Timer(POLL_SECONDS, active=False)

    def view(job_id: str | None) -> list[Any]:
        try:
            shown = export_view(ws, job_id)
        except (UserError, SpecError, OSError) as err:
            return [f"Error: {err}", gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False)]
        button = (gr.DownloadButton(f"Download {Path(shown['zip']).name}", value=shown["zip"],
                                    visible=True) if shown["zip"] else
                  gr.DownloadButton(visible=False))
        return [shown["status"], shown["log"], shown["files"], button,
                gr.Timer(active=shown["active"])]

    def on_run(run_id: str | None) -> list[Any]:
        try:
            choices = checkpoint_choices(ws, run_id)
            job_id = latest_export(ws, run_id)
            lora = is_lora(ws, run_id)
        except (UserError, SpecError, OSError) as err:
            return [gr.update(choices=[], value=None), *[gr.skip()] * 4, f"Error: {err}",
                    None, *view(None)]
        # another run: its own checkpoints and output folder, the options back to defaults
        return [gr.update(choices=choices, value=choices[0][1] if choices else None),
                default_out(run_id), gr.update(visible=lora, value=False), AS_SAVED, False,
                "", job_id, *view(job_id)]

    def on_start(*request: Any) -> list[Any]:
        if not request[0]:
            return ["choose a run first", gr.skip(), *[gr.skip()] * 5]
        try:
            text, job_id = start_export(ws, *request)
        except (UserError, SpecError, ValueError) as err:
            return [f"Error: {err}", gr.skip(), *[gr.skip()] * 5]
        return [text, job_id, *view(job_id)]

    shown_outputs = [status, log, files, download, timer]
    run.change(on_run, run, [checkpoint, out, merge, dtype, force, message, watched,
                             *shown_outputs])
    refresh.click(lambda cur: gr.update(choices=exportable_runs(ws), value=cur), run, run)
    start.click(on_start, [run, checkpoint, merge, dtype, out, force],
                [message, watched, *shown_outputs])
    timer.tick(view, watched, shown_outputs, show_progress="hidden")
    return run

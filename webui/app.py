"""`o1pruner webui`: the Gradio studio. Build a spec, launch detached stage workers, watch
them live, evaluate and compare.

Safe by default: binds 127.0.0.1, a login with `--auth-file FILE` (or $O1PRUNER_AUTH),
every browser-supplied path and every spec a UI action produces confined to the workspace,
and only the files the UI hands out served (docs/security.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr

from o1pruner.errors import UserError
from o1pruner.safeyaml import MAX_BYTES
from webui import handlers
from webui.build_tab import build_tab
from webui.explore_tab import eval_explorer_tab, samples_tab
from webui.export_tab import export_tab, exportable_runs
from webui.playground_tab import playground_tab
from webui.runs_tab import runs_tab
from webui.sweep_tab import sweep_ids, sweep_tab
from webui.workspace import Workspace

logger = logging.getLogger(__name__)

AUTH_ENV = "O1PRUNER_AUTH"
CSS = """
.o1p-stage{margin:4px 0 8px 0}
.o1p-note{margin:-4px 2px 2px 2px;line-height:1.25}
.o1p-path{font-size:11px;color:var(--body-text-color-subdued);background:none;padding:0}
.o1p-error{color:#dc2626;font-size:12px;font-weight:600;margin-top:2px}
.o1p-presets-label{flex-grow:0 !important;min-width:170px !important;align-self:center}
#presets{flex-wrap:wrap;gap:6px}
.o1p-field{gap:2px !important}
#compare-table table{display:block;overflow-x:auto}
#compare-table th{white-space:nowrap;word-break:normal;overflow-wrap:normal}
#compare-table td{word-break:normal;overflow-wrap:normal;white-space:nowrap}
#compare-table td:nth-last-child(2){white-space:normal;min-width:16em}
#run-results th,#run-results th *{word-break:normal !important;overflow-wrap:normal !important}
"""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_auth(text: str | None, source: str = "$O1PRUNER_AUTH") -> tuple[str, str] | None:
    """`user:password` -> (user, password); None or empty -> no login."""
    if not text:
        return None
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise UserError(f"{source}: expected user:password (both non-empty)")
    return user, password


def read_credentials(auth_file: str | Path | None) -> tuple[str, str] | None:
    """The login from --auth-file or $O1PRUNER_AUTH (then removed from this process's
    environment, so no worker inherits it); never from the command line."""
    from_env = os.environ.pop(AUTH_ENV, None)
    if auth_file is None:
        return parse_auth(from_env)
    path = Path(auth_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--auth-file {path}: cannot read it ({err})") from None
    if path.stat().st_mode & 0o077:
        logger.warning("--auth-file %s can be read by other users; chmod 600 it", path)
    lines = [line for line in text.splitlines() if line.strip()]
    return parse_auth(lines[0] if lines else "", f"--auth-file {path}")


def check_exposure(host: str, credentials: tuple[str, str] | None, insecure: bool) -> None:
    """Refuse to serve on a non-local interface without a login unless --insecure."""
    if host in LOCAL_HOSTS or credentials is not None:
        return
    if not insecure:
        raise UserError(f"--host {host} without a login: anyone who can reach this port could "
                        "start jobs and read the workspace's runs. Add --auth-file FILE (or "
                        "$O1PRUNER_AUTH), or pass --insecure if that is what you want")
    logger.warning("serving %s without a login (--insecure)", host)


def keep_choice(choices: list[str], current: str | None) -> Any:
    """A picker's fresh choices, keeping its value while it is still among them. With no
    value when the fill was asked for, the value is left alone: a run picked while the
    page was loading (the fill's answer arrives after the pick) stays picked."""
    if current is None or current in choices:
        return gr.update(choices=choices)
    return gr.update(choices=choices, value=None)


def build_app(workspace: str | Path, allow_remote_code: bool = False) -> gr.Blocks:
    """The studio's Blocks for `workspace` (tests build it without launching)."""
    ws = Workspace.open(workspace, allow_remote_code)
    with gr.Blocks(title="o1pruner studio", analytics_enabled=False) as demo:
        gr.Markdown(f"## o1pruner studio\nLength-harmonizing fine-tuning (O1-Pruner). "
                    f"Workspace: `{ws.root}` · runs in `{ws.relative(ws.runs_root)}/`")
        with gr.Tabs(selected="build") as tabs:
            with gr.Tab("Build", id="build"):
                build = build_tab(ws)
            with gr.Tab("Runs", id="runs") as runs_page:
                runs = runs_tab(ws)
            with gr.Tab("Playground", id="playground") as playground:
                playground_tab(ws, playground)
            with gr.Tab("Samples", id="samples") as samples:
                samples_tab(ws, samples)
            with gr.Tab("Eval explorer", id="eval-explorer") as eval_explorer:
                eval_explorer_tab(ws, eval_explorer)
            with gr.Tab("Sweeps", id="sweeps") as sweeps_page:
                sweep_pick = sweep_tab(ws)
            with gr.Tab("Export", id="export") as export_page:
                export_pick = export_tab(ws)
        start_message = gr.Markdown(elem_id="start-message")

        def on_start(stage: str, pending: str | None, *values: Any) -> list[Any]:
            step = handlers.start_step(values, ws, stage or "run", pending)
            shown = build.show(step.check)
            if step.question is not None:  # nothing started: the question, under Start
                return [*shown, "", *build.start_asks(step.question.short, step.pending,
                                                      step.message), gr.skip(), gr.skip()]
            if step.run is None or step.message.startswith("Error:"):
                return [*shown, step.message, *build.start_asks(None), gr.skip(), gr.skip()]
            names = handlers.run_ids(ws)
            return [*shown, step.message, *build.start_asks(None), gr.Tabs(selected="runs"),
                    gr.update(choices=names, value=ws.run_id(step.run))]

        build.start.click(on_start, [build.stage, build.pending_start, *build.fields],
                          [*build.error_outputs(), start_message, *build.start_outputs(),
                           tabs, runs.run])

        # every picker fills itself on page load and when its tab opens (a list built when
        # the server started is stale by then); the explorers' tabs refresh their own
        def fill_sweeps(current: str | None) -> Any:
            return keep_choice(sweep_ids(ws), current)

        def fill_exports(current: str | None) -> Any:
            return keep_choice(exportable_runs(ws), current)

        sweeps_page.select(fill_sweeps, sweep_pick, sweep_pick, show_progress="hidden")
        export_page.select(fill_exports, export_pick, export_pick, show_progress="hidden")
        runs_page.select(runs.fill_lists, None, runs.lists(), show_progress="hidden")

        def on_load(selected: str | None, sweep: str | None, export: str | None
                    ) -> list[Any]:
            """Re-attach to the newest running job (from files) and show its run's spec in
            the form, so that Start after a reload does not launch the defaults; without a
            run to restore, say what the form opened on (on a CPU: the quickstart, with its
            time here, estimated when the server started: a page load runs no probe)."""
            lists = runs.refresh_lists(selected)
            watched = lists[1]["value"]
            values, message = handlers.restore_from_run(watched, ws)
            if values is None:
                message = build.first_message or gr.skip()
            return [*lists, fill_sweeps(sweep), fill_exports(export),
                    gr.update(choices=ws.spec_files()), *build.loaded(values, message)]

        demo.load(on_load, [runs.run, sweep_pick, export_pick],
                  [*runs.lists(), sweep_pick, export_pick, build.load_path,
                   *build.load_outputs()], show_progress="hidden")
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, auth_file: str | Path | None = None,
           workspace: str | Path = ".", insecure: bool = False,
           allow_remote_code: bool = False) -> None:
    """Serve the studio until interrupted (called by `o1pruner webui`);
    `allow_remote_code`: specs from the UI may set model.trust_remote_code."""
    ws = Workspace.open(workspace)
    credentials = read_credentials(auth_file)
    check_exposure(host, credentials, insecure)
    ws.runs_root.mkdir(parents=True, exist_ok=True)
    ws.clear_served()
    demo = build_app(ws.root, allow_remote_code)
    logger.info("o1pruner studio on http://%s:%d (workspace %s%s)", host, port, ws.root,
                ", login required" if credentials else "")
    demo.queue(default_concurrency_limit=4).launch(**launch_options(ws, host, port,
                                                                    credentials))


def launch_options(ws: Workspace, host: str, port: int,
                   credentials: tuple[str, str] | None) -> dict[str, Any]:
    """Blocks.launch's arguments: only the files the UI hands out are served (never an
    output root or a run folder as such), never a public share link, whatever
    $GRADIO_SHARE says, and no upload (an imported spec) over the YAML size limit."""
    ws.served_root.mkdir(parents=True, exist_ok=True)
    return {"server_name": host, "server_port": port, "auth": credentials, "share": False,
            "allowed_paths": [str(ws.served_root)], "show_error": True, "css": CSS,
            "ssr_mode": False, "footer_links": [], "max_file_size": MAX_BYTES}

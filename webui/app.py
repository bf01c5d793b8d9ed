"""`o1pruner webui`: the Gradio studio. Build a spec, launch detached stage workers, watch
them live, evaluate and compare.

Safe by default: binds 127.0.0.1, a login with `--auth user:password` (or
$O1PRUNER_AUTH), every browser-supplied path confined to the workspace, and only the
workspace's run output root served as files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gradio as gr

from o1pruner.errors import UserError
from webui import handlers
from webui.build_tab import build_tab
from webui.runs_tab import runs_tab
from webui.workspace import Workspace

logger = logging.getLogger(__name__)

AUTH_ENV = "O1PRUNER_AUTH"
CSS = ".o1p-stage{margin:4px 0 8px 0}"


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """`user:password` -> (user, password); None or empty -> no login."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth / $O1PRUNER_AUTH: expected user:password (both non-empty)")
    return user, password


def build_app(workspace: str | Path) -> gr.Blocks:
    """The studio's Blocks for `workspace` (tests build it without launching)."""
    ws = Workspace.open(workspace)
    with gr.Blocks(title="o1pruner studio", analytics_enabled=False) as demo:
        gr.Markdown(f"## o1pruner studio\nLength-harmonizing fine-tuning (O1-Pruner). "
                    f"Workspace: `{ws.root}` · runs in `{ws.relative(ws.runs_root)}/`")
        with gr.Tabs(selected="build") as tabs:
            with gr.Tab("Build", id="build"):
                build = build_tab(ws)
            with gr.Tab("Runs", id="runs"):
                runs = runs_tab(ws)
        start_message = gr.Markdown(elem_id="start-message")

        def on_start(stage: str, *values: Any) -> list[Any]:
            check, run, message = handlers.start(values, ws, stage or "run")
            shown = build.show(check)
            if run is None or message.startswith("Error:"):
                return [*shown, message, gr.skip(), gr.skip()]
            names = handlers.run_names(ws)
            return [*shown, message, gr.Tabs(selected="runs"),
                    gr.update(choices=names, value=run.root.name)]

        build.start.click(on_start, [build.stage, *build.fields],
                          [*build.error_outputs(), start_message, tabs, runs.run])
        demo.load(runs.refresh_lists, runs.run, runs.lists())  # re-attach from files on page load
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
           workspace: str | Path = ".") -> None:
    """Serve the studio until interrupted (called by `o1pruner webui`)."""
    ws = Workspace.open(workspace)
    credentials = parse_auth(auth or os.environ.get(AUTH_ENV))
    ws.runs_root.mkdir(parents=True, exist_ok=True)
    demo = build_app(ws.root)
    logger.info("o1pruner studio on http://%s:%d (workspace %s%s)", host, port, ws.root,
                ", login required" if credentials else "")
    if host not in ("127.0.0.1", "localhost", "::1") and credentials is None:
        logger.warning("binding %s without --auth: anyone who can reach this port can start "
                       "jobs", host)
    demo.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=port, auth=credentials, allowed_paths=[str(ws.runs_root)],
        show_error=True, css=CSS, ssr_mode=False, footer_links=[])

"""Live view of one run directory: progress, log tail, curves, statistics, results.

Readers keep byte offsets and only read what was appended since the last tick
(`JsonlTail` for JSON lines, `TextTail` for logs); small summary files (disharmony table,
results) are re-read only when their modification time changes. State comes from files
alone, so a view built after a server restart shows the same thing.
"""

from __future__ import annotations

import html
import logging
import os
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

import pandas as pd

from o1pruner import jobs
from o1pruner.analysis import quartile_rows, warning_text
from o1pruner.files import JsonlTail, read_json
from o1pruner.hardware import CHOICE_EVENTS, choice_lines
from o1pruner.jobs import WARNINGS, RunDir, current_warnings
from webui.text import no_markup

logger = logging.getLogger(__name__)

# curve name -> (stage, metric key) series drawn on it. Every series is plotted against the
# training step; a pre-sample metric (one value per finished stage) is drawn as a dashed
# horizontal reference line.
CURVES: dict[str, list[tuple[str, str]]] = {
    "loss": [("train", "loss")],
    "reward mean": [("train", "reward/mean")],
    "mean sample length": [("presample", "mean_length"), ("train", "completion_length")],
    "clip fraction": [("train", "clip_ratio")],
    "learning rate": [("train", "learning_rate")],
}
_COLORS = ("#f97316", "#2563eb", "#16a34a", "#9333ea")
# A stage may report several passes under its name; each gets a bar of its own. Events
# name theirs in `phase`; older runs are told apart by their unit.
PHASES_BY_UNIT = {("train", "batch"): "reference pass"}
MAX_POINTS = 20_000


class TextTail:
    """The last lines of a growing text file, reading only the bytes appended since the
    previous call (the first call starts at most `first_bytes` before the end)."""

    def __init__(self, path: Path, max_lines: int = 200, first_bytes: int = 65536):
        self.path = path
        self.offset: int | None = None
        self.lines: deque[str] = deque(maxlen=max_lines)
        self._partial = ""
        self._first_bytes = first_bytes

    def read_new(self) -> list[str]:
        """Complete lines appended since the last call (a carriage-return redraw keeps only
        its final state, as a terminal shows it; a line right after the same line is
        dropped: the stage and the pipeline above it both print their last word)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if self.offset is None or size < self.offset:  # first read, or file replaced
            self.offset = max(0, size - self._first_bytes) if self.offset is None else 0
            self._partial = ""
        if size == self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read(size - self.offset)
        self.offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        *complete, self._partial = text.split("\n")
        new = []
        for line in complete:
            line = _terminal_text(line)
            # a final line that a stage and its pipeline both print ("stopped"): shown once
            if not (line.strip() and self.lines and line == self.lines[-1]):
                self.lines.append(line)
                new.append(line)
        return new

    def text(self) -> str:
        return "\n".join([*self.lines, _terminal_text(self._partial)]).rstrip("\n")


# A terminal's control sequences: CSI (colours, tqdm's cursor-up `ESC[A`, erase line), OSC
# (titles, links) and two-character escapes.
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def _terminal_text(line: str) -> str:
    """A log line as a terminal ends up showing it: the state after its last carriage
    return (a redrawn bar), without control sequences (colours, cursor moves)."""
    return ANSI_ESCAPE.sub("", line.rstrip("\r")).rsplit("\r", 1)[-1]


class _Cached:
    """A small JSON file re-read only when its modification time changes."""

    def __init__(self, path: Path):
        self.path, self.mtime, self.value = path, None, None

    def get(self) -> Any:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return None
        if mtime != self.mtime:
            self.mtime, self.value = mtime, read_json(self.path)
        return self.value


class LiveView:
    """Everything the Runs tab shows about one run, updated incrementally by `poll()`."""

    def __init__(self, run: RunDir):
        self.run = run
        self._events = JsonlTail(run.events_path)
        self._rounds: dict[str, JsonlTail] = {}  # later rounds' events (run.rounds)
        self._stats = JsonlTail(run.root / "presample" / "problem_stats.jsonl")
        self.log = TextTail(run.root / "logs" / jobs.WORKER_LOG)
        self.progress: dict[str, dict[str, Any]] = {}
        self.active: str | None = None  # the phase of the latest progress event
        self.metrics: dict[str, list[dict[str, Any]]] = {}
        self.stats = {"problems": 0, "length_sum": 0.0, "thinking_sum": 0.0,
                      "accuracy_sum": 0.0, "k": 0}
        self._disharmony = _Cached(run.root / "report" / "disharmony.json")
        self._results = _Cached(run.results_path)
        self.sent: list[str | None] | None = None  # what the page shows (see runs_tab)
        self.state: str | None = None  # the job state last shown
        self.metrics_seen = 0  # metrics events read so far: the curves' version
        # the status line's events: precision, engine and stages choices, stages' warnings
        self.choices: list[dict[str, Any]] = []

    def poll(self) -> None:
        """Read what the worker appended since the last poll."""
        for event in self._events.read_new():
            self._take(event)
        for folder in sorted(self.run.root.glob("rounds/round-*")):
            tail = self._rounds.setdefault(folder.name, JsonlTail(folder / "events.jsonl"))
            for event in tail.read_new():  # a bar and curves per phase of each later round
                self._take(event, f"{folder.name} ")
        for row in self._stats.read_new():
            self.stats["problems"] += 1
            self.stats["length_sum"] += float(row.get("mean_length") or 0.0)
            self.stats["thinking_sum"] += float(row.get("mean_thinking_tokens") or 0.0)
            self.stats["accuracy_sum"] += float(row.get("mean_accuracy") or 0.0)
            self.stats["k"] += int(row.get("k") or 0)
        self.log.read_new()

    def _take(self, event: dict[str, Any], prefix: str = "") -> None:
        """A progress event (its phase's bar) or a metrics event (its stage's curves); a
        later round's are kept under "round-r <phase or stage>"."""
        if event.get("kind") == "progress":
            self.active = prefix + phase_of(event)
            self.progress[self.active] = event
        elif event.get("kind") in CHOICE_EVENTS:
            self.choices = [e for e in self.choices if e.get("kind") != event["kind"]]
            self.choices.append(event)
        elif event.get("kind") == WARNINGS:  # a stage's current list replaces its last one
            event = {**event, "round": prefix.strip()}
            self.choices = [e for e in self.choices if not (
                e.get("kind") == WARNINGS and e.get("stage") == event.get("stage")
                and e.get("round") == event["round"])]
            self.choices.append(event)
        elif event.get("kind") == "metrics":
            self.metrics_seen += 1
            rows = self.metrics.setdefault(prefix + str(event.get("stage", "?")), [])
            rows.append(event)
            del rows[:-MAX_POINTS]

    # ------------------------------------------------------------------ renderings
    def job(self) -> dict[str, Any]:
        return jobs.status(self.run)

    def warnings(self) -> list[str]:
        """The warnings that hold (`o1pruner.jobs.progress.current_warnings`), one line each."""
        return warning_lines(self.choices)

    def trained_steps(self) -> int:
        """The last optimizer step with metrics (progress events are rate-limited, so a
        stop can leave the bar's last event behind the curves)."""
        steps = [ev.get("step") for ev in self.metrics.get("train", [])]
        return max((s for s in steps if isinstance(s, int)), default=0)

    def progress_html(self, running: bool = True, now: float | None = None) -> str:
        """A bar per phase (pre-sample, reference pass, train, eval): done/total, percent,
        elapsed and ETA (while `running`) from its last progress event. While running, the
        active phase (the latest event's) ticks on between events: its elapsed time grows
        and its ETA counts down from the event's time, and the tokens generated for the
        items in flight are shown."""
        if not self.progress:
            return "<div class='o1p-progress'>no progress reported yet</div>"
        now = time.time() if now is None else now
        parts = []
        for phase, ev in self.progress.items():
            done, total = ev.get("done", 0), ev.get("total") or 0
            unit = str(ev.get("unit", ""))
            if phase == "train" and unit == "step":
                done = min(max(done, self.trained_steps()), total or done)
            elapsed, eta = ev.get("elapsed_s"), ev.get("eta_s")
            live = running and phase == self.active and done < total
            since = float(max(0, int(now - ev["time"]))) if live and isinstance(
                ev.get("time"), (int, float)) else 0.0  # whole seconds since the event
            if isinstance(elapsed, (int, float)):
                elapsed += since
            if isinstance(eta, (int, float)):
                eta = max(0.0, eta - since)
            tokens = ev.get("tokens")
            if total:
                pct = 100.0 * done / total
                text = (f"{done}/{total} {html.escape(unit)} ({pct:.0f}%) · elapsed "
                        f"{format_seconds(elapsed)} · ETA "
                        f"{format_seconds(eta) if running and eta is not None and done < total else '-'}")
                if live and isinstance(tokens, int) and tokens > 0:
                    text += f" · generating: {tokens:,} tokens so far"
            else:  # e.g. an evaluation whose generations were all in the cache
                pct, text = 100.0, "nothing to do: every result was already there (cached)"
            parts.append(
                f"<div class='o1p-stage' data-stage='{html.escape(phase)}'>"
                f"<b>{html.escape(phase)}</b> {text}"
                "<div style='background:#e5e7eb;border-radius:4px;height:10px'>"
                f"<div style='width:{pct:.1f}%;background:#f97316;height:10px;"
                "border-radius:4px'></div></div></div>")
        return "<div class='o1p-progress'>" + "".join(parts) + "</div>"

    def curve(self, name: str) -> pd.DataFrame:
        """Long-format rows (x, value, series) for one curve of CURVES; with later rounds
        (run.rounds), a series per round, each against its own steps."""
        rounds = sorted({s.split(" ", 1)[0] for s in self.metrics if s.startswith("round-")},
                        key=lambda r: int(r.split("-")[1]))
        prefixes = ["round-1 " if rounds else ""] + [f"{r} " for r in rounds]
        rows = []
        for prefix in prefixes:
            for stage, key in CURVES[name]:
                kept = stage if prefix in ("", "round-1 ") else prefix + stage
                for i, ev in enumerate(self.metrics.get(kept, [])):
                    value = ev.get(key)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        x = ev.get("step", ev.get("done", i))
                        rows.append({"x": x, "value": float(value),
                                     "series": f"{prefix}{stage} {key}"})
        return pd.DataFrame(rows, columns=["x", "value", "series"])

    def curves_figure(self) -> Any:
        """All CURVES as one matplotlib figure, a panel each (None before any metric).

        Rendered on the server: gradio's native LinePlot fixes its axis types and colour
        domain from the first value it receives, so curves that start empty never showed.
        """
        frames = {name: self.curve(name) for name in CURVES}
        if all(frame.empty for frame in frames.values()):
            return None
        from matplotlib.figure import Figure  # no pyplot: no global figure registry

        fig = Figure(figsize=(3.2 * len(frames), 2.6), layout="constrained")
        for ax, (name, frame) in zip(fig.subplots(1, len(frames)), frames.items(), strict=True):
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if frame.empty:
                ax.text(0.5, 0.5, "no data yet", ha="center", va="center",
                        transform=ax.transAxes, color="gray", fontsize=9)
                continue
            rounds = list(dict.fromkeys(s.split(" ")[0] for s in frame["series"]
                                        if s.startswith("round-")))
            for i, (series, rows) in enumerate(frame.groupby("series", sort=False)):
                # with rounds, a colour per round (its pre-sample line dashed, its training
                # curve solid); else a colour per series
                first = series.split(" ")[0]
                color = _COLORS[(rounds.index(first) if rounds else i) % len(_COLORS)]
                if series.split(" ")[-2] == "presample":  # "[round-r ]presample <key>"
                    ax.axhline(rows["value"].iloc[-1], color=color, linestyle="--",
                               linewidth=1, label=series)
                else:
                    ax.plot(rows["x"], rows["value"], color=color, linewidth=1.5,
                            marker="o" if len(rows) < 30 else None, markersize=3,
                            label=series)
            if frame["series"].nunique() > 1:
                ax.legend(fontsize=7, loc="best")
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        return fig

    def presample_markdown(self) -> str:
        """Running pre-sample statistics from problem_stats.jsonl (and metrics events),
        then the warnings that hold (right above the results they explain)."""
        warned = "".join(f"  \n**warning: {no_markup(line)}**" for line in self.warnings())
        return self._presample_stats() + warned

    def _presample_stats(self) -> str:
        n = self.stats["problems"]
        if not n:
            last = (self.metrics.get("presample") or [None])[-1]
            if last is None:
                return "_no pre-sample statistics yet_"
            return ("pre-sample: " + ", ".join(f"{k} {_fmt(v)}" for k, v in last.items()
                                               if k not in ("time", "kind", "stage")))
        thinking = self.stats["thinking_sum"] / n
        split = (f" ({thinking:.1f} thinking, {self.stats['length_sum'] / n - thinking:.1f} "
                 "answer)") if thinking else ""
        return (f"**pre-sample**: {n} problems, {self.stats['k']} samples · mean length "
                f"{self.stats['length_sum'] / n:.1f} tokens{split} · mean accuracy "
                f"{100 * self.stats['accuracy_sum'] / n:.1f}%")

    def disharmony(self) -> pd.DataFrame:
        """The length-quartile table (report/disharmony.json) once it exists: a row per
        quartile, accuracy in %."""
        data = self._disharmony.get()
        if isinstance(data, dict) and isinstance(data.get("table1"), dict):
            try:
                return pd.DataFrame(quartile_rows(data["table1"]))
            except (KeyError, TypeError, ValueError) as err:
                logger.debug("disharmony.json: %s", err)
        return table_frame(data)

    def results(self) -> pd.DataFrame:
        """eval/results.json as a table once it exists (the evaluation stage's rows)."""
        data = self._results.get()
        if isinstance(data, dict) and "methods" in data:
            try:
                from o1pruner.evaluation.report import results_rows

                return compact_results(pd.DataFrame(results_rows(data)))
            except (ImportError, KeyError, TypeError) as err:
                logger.debug("results.json: %s", err)
        return table_frame(data)

    def report_images(self) -> list[str]:
        report = self.run.root / "report"
        return sorted(str(p) for p in report.glob("*.png")) if report.is_dir() else []


def compact_results(frame: pd.DataFrame) -> pd.DataFrame:
    """The results table without the columns that say nothing here, so that the intervals
    at its right end fit: empty ones, the thinking / answer split of a model that does not
    think, and replica seconds equal to the wall seconds."""
    drop = [c for c in frame.columns if frame[c].isna().all()]
    if "thinking tokens" in frame and not frame["thinking tokens"].fillna(0).any():
        drop += ["thinking tokens", "answer tokens"]
    if "replica s" in frame and frame["replica s"].equals(frame.get("wall s")):
        drop.append("replica s")
    return frame.drop(columns=[c for c in dict.fromkeys(drop) if c in frame])


def phase_of(event: dict[str, Any]) -> str:
    """The progress bar an event belongs to: its `phase`, else its stage (the reference
    pass of training, reported in batches, apart from the training steps)."""
    stage = str(event.get("stage", "?"))
    return str(event.get("phase") or PHASES_BY_UNIT.get((stage, str(event.get("unit"))), stage))


def table_frame(data: Any) -> pd.DataFrame:
    """A JSON table (list of rows, {rows: [...]}, or {name: {col: value}}) as a DataFrame."""
    if data is None:
        return pd.DataFrame({"": ["not available yet"]})
    if isinstance(data, dict):
        for key in ("quartiles", "table", "rows"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        data = [{"name": k, **v} for k, v in data.items()]
    rows = [r for r in data if isinstance(r, dict)] if isinstance(data, list) else [data]
    frame = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, (dict, list))}
                          for r in rows])
    return frame.round(4) if not frame.empty else frame


def format_seconds(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def job_markdown(run: RunDir, job: dict[str, Any],
                 choices: list[dict[str, Any]] | None = None) -> str:
    """One status line: run, state, stage, pid, exit code and message; then what the
    machine chose (precision, engine) from `choices` events."""
    state = job["state"]
    if state == "stopping":
        state = "stopping: saving (a checkpoint when training)"
    parts = [f"**{run.root.name}**", f"state: **{state}**"]
    if job.get("stage"):
        parts.append(f"stage: {job['stage']}")
    if job.get("alive") and job.get("pid"):
        parts.append(f"pid {job['pid']}")
    if job.get("exit_code") is not None:
        parts.append(f"exit code {job['exit_code']}")
    if job.get("message"):
        parts.append(no_markup(job["message"]))
    lines = choice_lines(choices or [])
    warned = "".join(f"  \n**warning: {no_markup(line)}**" for line in warning_lines(choices or []))
    return (" · ".join(parts) + warned
            + "".join(f"  \n{no_markup(line)}" for line in lines))


def warning_lines(events: list[dict[str, Any]]) -> list[str]:
    """The warnings of the last `warnings` event of each stage (and round), one line each:
    what, and what to do."""
    return [warning_text(w) for w in current_warnings(
        e for e in events if e.get("kind") == WARNINGS)]

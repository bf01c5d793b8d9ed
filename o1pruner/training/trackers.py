"""Experiment trackers (train.report_to) through accelerate: TensorBoard, Weights & Biases,
MLflow, Trackio.

One path for every tracker: the Accelerator is made with `log_with` (the tracker objects
below), `start_trackers` calls `init_trackers` with the resolved spec as the configuration,
the trainer logs each metrics step with `accelerator.log` (main process only), and
`finish_trackers` ends them, also after a stop or a crash. The metric names are those of
`events.jsonl` (which the web UI reads, whatever is chosen here) under `train/`.

Each tracker reads its own settings from the environment: WANDB_MODE=offline (and
WANDB_PROJECT), MLFLOW_TRACKING_URI, TRACKIO_DIR / TRACKIO_SPACE_ID. The project is
`o1pruner`, the run is named after the run directory.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError

logger = logging.getLogger(__name__)

PROJECT = "o1pruner"
# tracker -> the package it imports (and the one to install)
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow",
            "trackio": "trackio"}


def check_trackers(names: list[str]) -> list[str]:
    """train.report_to without repeats; a UserError naming the package to install for a
    tracker that is not importable here (accelerate would silently skip it)."""
    wanted = list(dict.fromkeys(names))
    missing = [n for n in wanted if importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise UserError(
            f"train.report_to: {', '.join(missing)} asked for but not installed; install "
            f"it (pip install {' '.join(PACKAGES[n] for n in missing)}) or remove it from "
            f"train.report_to (now {wanted})")
    return wanted


def make_trackers(names: list[str], train_dir: Path, run_name: str) -> list[Any]:
    """accelerate tracker objects for `names` (checked by `check_trackers`), for the
    Accelerator's `log_with`. TensorBoard writes to train/tensorboard/, as before."""
    from accelerate.tracking import (
        MLflowTracker,
        TensorBoardTracker,
        TrackioTracker,
        WandBTracker,
    )

    made: list[Any] = []
    for name in check_trackers(names):
        if name == "tensorboard":
            made.append(TensorBoardTracker("tensorboard", str(train_dir)))
        elif name == "wandb":
            made.append(WandBTracker(PROJECT, name=run_name, dir=str(train_dir)))
        elif name == "mlflow":
            made.append(MLflowTracker(PROJECT, run_name=run_name))
        elif name == "trackio":
            made.append(TrackioTracker(PROJECT, name=run_name))
    return made


def flat_config(spec: Any) -> dict[str, Any]:
    """The resolved spec as {"section.field": value}, values bool/int/float/str (lists and
    mappings as JSON text), which every tracker accepts as hyper-parameters."""
    out: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else k)
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[key] = "null" if value is None else value
        else:
            out[key] = json.dumps(value, ensure_ascii=False)

    walk(spec.model_dump(mode="json", by_alias=True), "")
    return out


def start_trackers(acc: Any, spec: Any) -> None:
    """Start the Accelerator's trackers with the spec as their configuration."""
    if not acc.log_with:
        return
    try:
        acc.init_trackers(PROJECT, config=flat_config(spec))
    except Exception as err:  # noqa: BLE001 - e.g. W&B without a login or network
        names = ", ".join(str(getattr(t, "name", t)) for t in acc.log_with)
        finish_trackers(acc)
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise UserError(f"train.report_to: the experiment trackers ({names}) did not start "
                        f"({type(err).__name__}: {detail}); check the tracker's login and "
                        "settings (without network: WANDB_MODE=offline, a local "
                        "MLFLOW_TRACKING_URI), or remove it from train.report_to") from err
    if acc.is_main_process:
        logger.info("experiment trackers: %s", ", ".join(t.name for t in acc.trackers))


def log_metrics(acc: Any, metrics: dict[str, Any], step: int) -> None:
    """One metrics step to every tracker (main process), as `train/<name>`."""
    if acc.trackers:
        acc.log({f"train/{k}": v for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)


def finish_trackers(acc: Any) -> None:
    """End every tracker (flush and close), keeping the process group (the stage saves and
    synchronises after training): accelerate's end_training without its
    destroy_process_group. A tracker that fails to finish is logged, not raised."""
    for tracker in list(acc.trackers):
        try:
            tracker.finish()
        except Exception as err:  # noqa: BLE001 - a tracker's upload must not fail the run
            logger.warning("tracker %s did not finish cleanly: %s", tracker.name, err)
    acc.trackers.clear()

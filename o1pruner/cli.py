"""`o1pruner` command line: one subcommand per stage, all driven by the same RunSpec.

User mistakes (a bad spec, a missing file, a bad row) print a clear message and exit 2;
nothing prints a traceback for them. Heavy modules are imported only by the subcommand
that needs them, so `o1pruner validate` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

from o1pruner.errors import UserError
from o1pruner.jobs import exit_code_of, parent_process, user_message
from o1pruner.spec import Grading
from o1pruner.specio import SpecError, dump_yaml, load_spec

logger = logging.getLogger("o1pruner")

EXIT_USAGE = 2


class _RayAddress(argparse.Action):
    """--ray-address X: shorthand for --set presample.ray_address=X --set eval.ray_address=X."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any,
                 option: Any = None) -> None:
        namespace.overrides = [*namespace.overrides, f"presample.ray_address={value}",
                               f"eval.ray_address={value}"]


def _add_spec_args(parser: argparse.ArgumentParser, required: bool = True,
                   generates: bool = False) -> None:
    parser.add_argument(
        "spec", nargs=None if required else "?", help="Run spec YAML (see templates/)."
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a spec field, e.g. --set reward.lambda=5 (repeatable; values are YAML).",
    )
    if generates:
        parser.add_argument(
            "--ray-address", action=_RayAddress, metavar="ADDRESS",
            help="Run the generation replicas as Ray actors on this cluster (auto, "
            "host:port, ray://host:port or local); sets presample.ray_address and "
            "eval.ray_address (docs/scale-out.md).")


def cmd_validate(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.overrides)
    sys.stdout.write(dump_yaml(spec))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from o1pruner.grading import grade_file

    summary = grade_file(Path(args.input), Path(args.output), workers=args.workers,
                         timeout=args.timeout, mode=args.mode)
    print(summary.describe())
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from o1pruner.data import describe_datasets, preview_dataset

    if args.name:
        print(preview_dataset(args.name, rows=args.rows, local_dir=args.local_dir))
    else:
        print(describe_datasets())
    return 0


def cmd_presample(args: argparse.Namespace) -> int:
    from o1pruner.sampling import run_presample

    run_presample(load_spec(args.spec, args.overrides))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from o1pruner.analysis import run_analyze

    print(run_analyze(Path(args.run_dir)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from o1pruner.training import run_train

    run_train(load_spec(args.spec, args.overrides))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from o1pruner.evaluation import run_eval

    benchmarks = args.benchmarks.split(",") if args.benchmarks else None
    run_eval(load_spec(args.spec, args.overrides), model=args.model, benchmarks=benchmarks)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from o1pruner.export import export_model

    result = export_model(args.run, args.out, checkpoint=args.checkpoint,
                          merge_lora=args.merge_lora, dtype=args.dtype, force=args.force,
                          push_to_hub=args.push_to_hub, round=args.round)
    print(result.message)
    print("\n".join(f"  {name}" for name in result.files))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from o1pruner.evaluation import run_compare

    print(run_compare([Path(p) for p in args.run_dirs]))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from o1pruner.estimate import estimate_run
    from o1pruner.pipeline import run_pipeline

    spec = load_spec(args.spec, args.overrides)
    estimate = estimate_run(spec)
    if estimate is not None:
        print(estimate.line(), file=sys.stderr, flush=True)
    print(run_pipeline(spec))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from o1pruner import jobs
    from o1pruner.jobs import RunDir

    run = RunDir(Path(args.run_dir))
    if not run.is_run():
        raise UserError(f"{run.root}: not a run directory (no spec.yaml or job.json)")
    shown: list[int] = []

    def waiting(seconds: float) -> None:
        if int(seconds) // 10 not in shown:
            shown.append(int(seconds) // 10)
            print(f"stopping: the running stage is saving ({seconds:.0f} s)", file=sys.stderr)

    job = jobs.stop(run, timeout=args.timeout, on_wait=waiting)
    print(f"{run.root.name}: {job['state']}" + (f" ({job['message']})" if job.get("message")
                                                  else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from o1pruner import jobs
    from o1pruner.analysis import warning_text
    from o1pruner.hardware import choice_lines
    from o1pruner.jobs import RunDir, current_warnings

    run = RunDir(Path(args.run_dir))
    job = jobs.status(run)
    parts = [f"{run.root.name}: {job['state']}"]
    if job.get("stage"):
        parts.append(f"stage {job['stage']}")
    if job.get("alive") and job.get("pid"):
        parts.append(f"pid {job['pid']}")
    if job.get("message"):
        parts.append(str(job["message"]))
    print(" · ".join(parts))
    events = run.events()
    for warning in current_warnings(events):
        print(f"  warning: {warning_text(warning)}")
    for line in choice_lines(events):
        print(f"  {line}")
    return 0


def cmd_webui(args: argparse.Namespace) -> int:
    from webui.app import launch

    if args.auth is not None:
        raise UserError("--auth on the command line is visible to every user of this machine "
                        "(ps, shell history); put user:password in a file and pass "
                        "--auth-file FILE, or set $O1PRUNER_AUTH")
    launch(host=args.host, port=args.port, auth_file=args.auth_file, workspace=args.workspace,
           insecure=args.insecure, allow_remote_code=args.allow_remote_code)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from o1pruner.sweep import PointsFailed, load_sweep, plan_sweep, run_sweep

    target = Path(args.spec)
    if target.is_dir():
        if args.grid or args.seeds or args.preset or args.overrides:
            raise UserError(f"{target} is a sweep folder: it is resumed as it was defined "
                            "(no --grid, --seeds, --preset or --set)")
        sweep = load_sweep(target)
    else:
        sweep = plan_sweep(target, args.grid, args.seeds, overrides=args.overrides,
                           name=args.name, preset=args.preset, seed_fields=args.seed_field)
    print(f"sweep {sweep.name}: {len(sweep.points)} runs in {sweep.root}")
    table = sweep.root / "report" / "table.md"
    try:
        run_sweep(sweep, parallel=args.parallel)
    except PointsFailed:  # the report says which points failed and why, then the error
        print(table.read_text(encoding="utf-8"))
        raise
    print(table.read_text(encoding="utf-8"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from o1pruner.sweep import PRESETS

    parser = argparse.ArgumentParser(
        prog="o1pruner",
        description="Length-harmonizing fine-tuning (O1-Pruner): make reasoning models think "
        "shorter without getting worse.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str):
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("validate", cmd_validate, "Check a spec and print it resolved, as YAML.")
    _add_spec_args(p, required=False, generates=True)

    p = add("grade", cmd_grade, "Grade predictions against gold answers (JSONL in, JSONL out).")
    p.add_argument("--input", required=True, help="JSONL with `pred` and `gold` on each line.")
    p.add_argument("--output", required=True, help="JSONL written with `extracted`, `correct`.")
    p.add_argument("--workers", type=int, default=None, help="Grading processes (default: CPUs).")
    p.add_argument("--timeout", type=float, default=5.0, help="Seconds allowed per item.")
    p.add_argument("--mode", choices=get_args(Grading), default="strict",
                   help="strict: the last \\boxed{} or #### N only (default); standard: "
                   "math-verify's own extraction of LaTeX and plain answers. A row with "
                   "truncated: true (or finish_reason: length) needs a closed last box.")

    p = add("datasets", cmd_datasets, "List the dataset registry, or preview one data set.")
    p.add_argument("name", nargs="?", help="Registry name or file to preview.")
    p.add_argument("--rows", type=int, default=3, help="Rows to show in a preview.")
    p.add_argument("--local-dir", default=None, help="Directory with local data files.")

    p = add("presample", cmd_presample, "Step 1: sample K graded solutions per problem.")
    _add_spec_args(p, generates=True)
    p = add("analyze", cmd_analyze, "Length-disharmony analysis of a run's pre-samples.")
    p.add_argument("run_dir", help="Run directory (runs/<name>).")
    p = add("train", cmd_train, "Steps 3-5: reward, reference pass and training.")
    _add_spec_args(p)
    p = add("eval", cmd_eval, "Step 6: evaluate a model against its base on benchmarks.")
    _add_spec_args(p, generates=True)
    p.add_argument("--model", default=None, help="Model to evaluate (default: the run's "
                   "trained model).")
    p.add_argument("--benchmarks", default=None, help="Comma-separated benchmark names.")
    p = add("export", cmd_export, "Export a run's trained model as a standalone Hugging "
            "Face folder (transformers, vLLM) with a model card; optionally push it to the hub.")
    p.add_argument("run", help="Run directory (runs/<name>) or its spec YAML.")
    p.add_argument("--out", required=True, help="Output folder (new or empty; outside the run).")
    p.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                   help="Export step STEP: train/models/step-STEP if saved "
                   "(train.save_model_steps), else the resumable train/checkpoints/step-STEP "
                   "(default: train/final).")
    p.add_argument("--round", type=int, default=None, metavar="R",
                   help="Runs of several rounds (run.rounds): export round R's model "
                   "(default: the last round's, the run's trained model).")
    p.add_argument("--merge-lora", action="store_true",
                   help="LoRA runs: export the merged full model instead of the adapter.")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                   help="Weights' dtype (default: as saved, i.e. train.save_dtype).")
    p.add_argument("--force", action="store_true",
                   help="Replace an earlier export in --out.")
    p.add_argument("--push-to-hub", default=None, metavar="ORG/NAME",
                   help="Then upload the folder to this Hugging Face Hub model repository "
                   "(created if needed; needs a token: HF_TOKEN or `hf auth login`).")
    p = add("compare", cmd_compare, "One results table over several runs.")
    p.add_argument("run_dirs", nargs="+", help="Run directories.")
    p = add("run", cmd_run, "The whole pipeline: presample, train, eval, report.")
    _add_spec_args(p, generates=True)
    p = add("sweep", cmd_sweep, "Run a spec over a grid of values and seeds (one run each, "
            "queued), then a report with intervals over seeds; SPEC may be a sweep folder "
            "to resume.")
    _add_spec_args(p, generates=True)
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                   help="Values of a spec field to sweep, e.g. --grid reward.lambda=0.5,1,2 "
                   "(repeatable: the grid is every combination).")
    p.add_argument("--seeds", default=None, metavar="S1,S2",
                   help="Seeds: each grid point runs once per seed (default: the spec's).")
    p.add_argument("--seed-field", action="append", default=None, metavar="FIELD",
                   help="Spec field(s) the seed sets (default run.seed: training and data "
                   "order; add presample.seed to re-sample per seed).")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="Runs at a time (default 1).")
    p.add_argument("--name", default=None, help="Sweep name (default: from the spec and grid).")
    p.add_argument("--preset", default=None, choices=list(PRESETS),
                   help="paper-table: base, Fast-Solving Prompt, SFT, DPO and O1-Pruner on "
                   "the same pre-samples, as the paper's Table 2; peers: those and the "
                   "on-policy length methods grpo_length and thinkprune (docs/sweeps.md).")
    p = add("stop", cmd_stop, "Stop a run's job: the running stage saves (the trainer a "
            "checkpoint) and exits; a re-run resumes.")
    p.add_argument("run_dir", help="Run directory (runs/<name>).")
    p.add_argument("--timeout", type=float, default=None, help="Seconds to wait for the save "
                   "before the job is killed (default: the run's run.stop_timeout).")
    p = add("status", cmd_status, "The state of a run's job (from its files).")
    p.add_argument("run_dir", help="Run directory (runs/<name>).")
    p = add("webui", cmd_webui, "Start the web studio.")
    p.add_argument("--host", default="127.0.0.1", help="Interface to bind (default: local only).")
    p.add_argument("--port", type=int, default=7860, help="Port (default 7860).")
    p.add_argument("--auth-file", default=None, metavar="FILE",
                   help="File holding user:password for a login (or set $O1PRUNER_AUTH); "
                   "never on the command line.")
    p.add_argument("--auth", default=None, help=argparse.SUPPRESS)
    p.add_argument("--insecure", action="store_true",
                   help="Allow a non-local --host without a login (anyone who reaches the "
                   "port can start jobs and read the workspace's runs).")
    p.add_argument("--workspace", default=".", help="Folder the UI may read and write.")
    p.add_argument("--allow-remote-code", action="store_true",
                   help="Let specs from the UI set model.trust_remote_code (the model's "
                   "repository then runs its own Python code here); refused without it.")
    return parser


_stop_signals: list[int] = []


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT unwind like Ctrl-C, once: a repeated signal (a stop sent to the whole
    process group and forwarded by a parent) does not interrupt the clean-up."""
    if _stop_signals:
        logger.info("signal %d: already stopping", signum)
        return
    _stop_signals.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A stop request (SIGTERM, as the web UI sends) unwinds like Ctrl-C, so every stage
    # records itself as stopped; the trainer installs its own handler to save a checkpoint.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except SpecError as err:
        if err.source:
            print(f"{err.source}: invalid spec", file=sys.stderr)
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if parent_process() is None:  # a stage under `o1pruner run`: its parent says it
            print("stopped", file=sys.stderr)
        return exit_code_of(KeyboardInterrupt())
    except Exception as err:  # noqa: BLE001 - one message, never a bare traceback
        message = user_message(err)
        if not isinstance(err, UserError) and not getattr(err, "_o1pruner_logged", False):
            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        return exit_code_of(err)


if __name__ == "__main__":
    sys.exit(main())

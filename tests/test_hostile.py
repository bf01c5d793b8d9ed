"""Hostile and mistaken input, from the CLI and the web UI: YAML alias bombs and cycles,
empty specs, paths outside the workspace, missing models, ad-hoc evaluations that must not
touch their run, logins kept off the command line."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from o1pruner import jobs
from o1pruner.cli import main as cli_main
from o1pruner.errors import UserError
from o1pruner.files import atomic_write_json
from o1pruner.jobs import RunDir
from o1pruner.prompts import load_template
from o1pruner.spec import ModelSpec, RunSpec
from o1pruner.specio import SpecError, load_spec, load_spec_text
from webui import form, handlers
from webui.app import check_exposure, read_credentials
from webui.workspace import Workspace

# ~570 bytes that expand to 10^9 list items once the aliases are resolved
BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]) + "\n"
CYCLE = "model: &m {name_or_path: x, extra: *m}\n"


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "workspace"
    (root / "models").mkdir(parents=True)
    (tmp_path / "outside.jsonl").write_text('{"problem": "secret?", "answer": "42"}\n')
    (tmp_path / "outside.txt").write_text("name: leaked\nuser: '{problem} TOP-SECRET'\n")
    return Workspace.open(root)


def _values(**changes: object) -> list[object]:
    values = dict(zip([leaf.key for leaf in form.leaves()], form.default_values(), strict=True))
    values.update({"run.name": "t", **changes})
    return list(values.values())


def _problems(ws: Workspace, **changes: object) -> str:
    check = handlers.validate(_values(**changes), ws)
    assert check.spec is None, "expected the form to be refused"
    return "\n".join(check.problems)


@pytest.mark.timeout(60)  # a hang guard: an expanded bomb never ends
# ----------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("text, expected", [
    (BOMB, "expands to more than 100,000 values"),
    (CYCLE, "self-reference"),
])
def test_cli_refuses_hostile_yaml_fast_and_clearly(tmp_path: Path, text: str, expected: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert cli_main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "line" in err and "Traceback" not in err


@pytest.mark.timeout(60)  # a hang guard: an expanded bomb never ends
@pytest.mark.parametrize("text, expected", [
    (BOMB, "expands to more than 100,000 values"),
    (CYCLE, "self-reference"),
])
def test_ui_import_refuses_hostile_yaml_and_keeps_the_form(text: str, expected: str) -> None:
    values, message = handlers.import_yaml_text(text, "evil.yaml")
    assert values is None and "form is unchanged" in message and expected in message


@pytest.mark.timeout(60)  # a hang guard: an expanded bomb never ends
def test_ui_inline_yaml_field_refuses_an_alias_bomb(ws: Workspace) -> None:
    inline = "{name: arithmetic_test, x: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
        f"y{i}: &b{i} [" + ", ".join([f"*{'a' if i == 0 else f'b{i - 1}'}"] * 10) + "]"
        for i in range(6)) + "}"
    problems = _problems(ws, **{"data.train": inline})
    assert "data.train" in problems and "expands to more than" in problems


def test_a_set_override_cannot_smuggle_a_recursive_value() -> None:
    with pytest.raises(SpecError, match="self-reference"):
        load_spec(None, ["presample.k=&a [*a]"])


def test_an_empty_spec_is_an_error_not_a_paper_scale_run(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing but a comment\n")
    with pytest.raises(SpecError, match="the spec is empty"):
        load_spec(path)
    with pytest.raises(SpecError, match="the spec is empty"):
        load_spec_text("", "pasted")


# ------------------------------------------------------------------ paths (web UI)
def test_import_path_outside_the_workspace_is_refused_without_echo(ws: Workspace) -> None:
    values, message = handlers.import_yaml_file(str(ws.root.parent / "outside.txt"), ws)
    assert values is None and "outside the workspace" in message
    assert "TOP-SECRET" not in message and "leaked" not in message


@pytest.mark.parametrize("field", ["data.train", "eval.benchmarks"])
def test_dataset_fields_outside_the_workspace_are_refused(ws: Workspace, field: str) -> None:
    outside = str(ws.root.parent / "outside.jsonl")
    value = [outside] if field == "eval.benchmarks" else outside
    problems = _problems(ws, **{field: value})
    assert "outside the workspace" in problems and "secret" not in problems


def test_prompt_template_outside_the_workspace_is_refused(ws: Workspace) -> None:
    for ref in (str(ws.root.parent / "outside.txt"), "../outside.txt"):
        problems = _problems(ws, **{"model.prompt_template": ref})
        assert "model.prompt_template" in problems and "TOP-SECRET" not in problems


def test_a_prompt_template_must_be_a_name_or_a_yaml_file(tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("name: x\nuser: '{problem} SECRET-CONTENT'\n")
    with pytest.raises(UserError, match="ending in .yaml") as err:
        load_template(ModelSpec(prompt_template=str(tmp_path / "notes")))
    assert "SECRET-CONTENT" not in str(err.value)


def test_a_model_path_outside_the_workspace_is_refused(ws: Workspace) -> None:
    problems = _problems(ws, **{"model.name_or_path": str(ws.root.parent)})
    assert "model.name_or_path" in problems and "outside the workspace" in problems


def test_a_missing_local_model_is_no_such_directory_at_preview(ws: Workspace) -> None:
    check, _, _ = handlers.preview(_values(**{"model.name_or_path": "models/does-not-exist"}),
                                   ws)
    assert check.spec is None
    assert "model.name_or_path: no such directory: models/does-not-exist" in check.summary()


def test_evaluate_panel_paths_are_confined(ws: Workspace) -> None:
    run = ws.run_dir("r")
    run.root.mkdir(parents=True)
    run.spec_path.write_text(RunSpec.model_validate({"run": {"name": "r"}}).to_yaml())
    with pytest.raises(UserError, match="benchmarks: .*outside the workspace"):
        handlers.evaluate("runs/r", "", str(ws.root.parent / "outside.jsonl"), ws)
    with pytest.raises(UserError, match="model: .*outside the workspace"):
        handlers.evaluate("runs/r", str(ws.root.parent), "", ws)
    with pytest.raises(UserError, match="outside the workspace"):
        handlers.evaluate("../../etc", "", "", ws)
    assert not run.job_path.exists()


# ----------------------------------------------------------- ad-hoc evaluations
def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".lock" not in p.name}


def _finished_run(ws: Workspace) -> RunDir:
    run = ws.run_dir("done-run")
    run.root.mkdir(parents=True)
    spec = RunSpec.model_validate({"model": {"name_or_path": "models/base"},
                                   "eval": {"engine": "hf"}, "run": {"name": "done-run"}})
    run.spec_path.write_text(spec.to_yaml())
    run.update_job(state="done", stage="run", started_at=1_700_000_000.0,
                   finished_at=1_700_000_100.0, exit_code=0)
    atomic_write_json(run.root / "eval" / "results.json", {"methods": ["base", "trained"]})
    gen = run.root / "eval" / "trained" / "arithmetic_test" / "generations.jsonl"
    gen.parent.mkdir(parents=True)
    gen.write_text('{"problem_id": "1", "completion": "2"}\n')
    atomic_write_json(gen.parent / "key.json", {"model": "trained"})
    return run


def test_evaluating_a_missing_model_leaves_the_finished_run_untouched(ws: Workspace) -> None:
    run = _finished_run(ws)
    before = _tree_digest(run.root)
    with pytest.raises(UserError, match="model: no such directory: models/does-not-exist"):
        handlers.evaluate("runs/done-run", "models/does-not-exist", "", ws)
    assert _tree_digest(run.root) == before
    assert jobs.status(run)["state"] == "done"


def test_an_adhoc_evaluation_is_its_own_job_and_never_touches_the_run(ws: Workspace) -> None:
    run = _finished_run(ws)
    (ws.root / "models" / "base").mkdir()
    (ws.root / "models" / "base" / "config.json").write_text("{}")
    before = _tree_digest(run.root)
    # a hub-style id that cannot be loaded here: the ad-hoc job starts, then fails
    message, job_id = handlers.evaluate("runs/done-run", "nobody/nothing", "arithmetic_test",
                                        ws)
    assert job_id.startswith("runs/done-run/eval/adhoc/nobody-nothing-")
    assert f"as its own job `{job_id}`" in message
    adhoc = ws.run_dir(job_id)
    deadline = time.monotonic() + 120
    while jobs.status(adhoc)["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert jobs.status(adhoc)["state"] == "failed"
    after = _tree_digest(run.root)
    assert {k: v for k, v in after.items() if not k.startswith("eval/adhoc/")} == before
    assert any(k.startswith("eval/adhoc/") and k.endswith("job.json") for k in after)
    assert jobs.status(run)["state"] == "done"
    assert run.read_job()["started_at"] == 1_700_000_000.0
    rows = {r["id"]: r for r in handlers.runs(ws)}
    assert rows[job_id]["kind"] == "eval" and rows[job_id]["state"] == "failed"
    assert rows["runs/done-run"]["state"] == "done"


# --------------------------------------------------------------- output roots
def test_runs_under_another_output_root_are_listed_and_controllable(ws: Workspace) -> None:
    values = _values(**{"run.output_root": "experiments", "run.name": "elsewhere",
                        "model.name_or_path": "nobody/nothing", "data.train_limit": 2,
                        "presample.k": 2})
    check, run, message = handlers.start(values, ws, "presample")
    assert run is not None and not message.startswith("Error"), message
    assert run.root == ws.root / "experiments" / "elsewhere"
    assert "experiments/elsewhere" in handlers.run_ids(ws)
    deadline = time.monotonic() + 120
    while jobs.status(run)["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert handlers.stop("experiments/elsewhere", ws).endswith("failed")
    asked = handlers.delete("experiments/elsewhere", False, None, ws)
    assert asked.pending == "experiments/elsewhere"
    assert handlers.delete("experiments/elsewhere", True, asked.pending,
                           ws).message == "deleted experiments/elsewhere"
    assert not run.root.exists()


# ------------------------------------------------------------------------- login
def test_the_login_comes_from_a_file_or_the_environment_never_argv(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "login"
    secret.write_text("ann:s3cret\n")
    assert read_credentials(secret) == ("ann", "s3cret")
    monkeypatch.setenv("O1PRUNER_AUTH", "bob:pw")
    assert read_credentials(None) == ("bob", "pw")
    assert "O1PRUNER_AUTH" not in os.environ  # no worker inherits it
    assert cli_main(["webui", "--auth", "ann:s3cret"]) == 2
    assert "--auth-file" in capsys.readouterr().err


def test_a_public_host_without_a_login_needs_insecure() -> None:
    check_exposure("127.0.0.1", None, insecure=False)
    check_exposure("0.0.0.0", ("ann", "pw"), insecure=False)
    with pytest.raises(UserError, match="--insecure"):
        check_exposure("0.0.0.0", None, insecure=False)
    check_exposure("0.0.0.0", None, insecure=True)


# ------------------------------------------------------------------ damaged run files
def test_a_damaged_presample_line_stops_a_resume_with_file_line_and_fix(
        tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from o1pruner.jobs import run_dir_for
    from o1pruner.models import load_tokenizer
    from o1pruner.specio import save_spec
    from tests.presample_files import make_spec, write_presample

    spec = make_spec(tiny_model_dir, tmp_path / "runs", name="damaged")
    run = run_dir_for(spec)
    out = write_presample(run.root, load_tokenizer(spec.model, str(tiny_model_dir)))
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    lines[4] = lines[4][:20] + "\n"  # a complete line cut short: damaged, not torn
    (out / "samples.jsonl").write_text("".join(lines))
    save_spec(spec, tmp_path / "spec.yaml")
    assert cli_main(["train", str(tmp_path / "spec.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'samples.jsonl'}, line 5: not a valid JSON record" in err
    assert "delete that line" in err and "Traceback" not in err
    job = run.read_job()
    assert job["state"] == "failed" and "line 5" in job["message"]


def test_out_of_memory_is_one_message_with_what_to_do() -> None:
    from o1pruner.jobs import exit_code_of, user_message

    class OutOfMemoryError(RuntimeError):  # the name torch.OutOfMemoryError has
        pass

    for err, where in ((MemoryError(), "machine (RAM)"),
                       (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                        "GPU: CUDA out of memory")):
        text = user_message(err)
        assert text.startswith(f"out of memory on the {where}") and "train.batch_size" in text
        assert exit_code_of(err) == 2

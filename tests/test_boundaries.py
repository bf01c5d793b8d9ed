"""The studio's walls (issue #29, docs/security.md): every spec a UI action produces is
confined by one function, only run folders are served, data and model text stays text, and
one odd file never takes the studio down."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from o1pruner.cli import build_parser
from o1pruner.errors import UserError
from o1pruner.spec import RunSpec
from webui import form, handlers
from webui.export_tab import export_argv
from webui.sweep_tab import start_sweep, sweep_ids
from webui.workspace import Workspace


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder beside the workspace: a model, a template and a secret, never to be used."""
    root = tmp_path / "outside"
    (root / "model").mkdir(parents=True)
    (root / "model" / "config.json").write_text("{}")
    (root / "template.yaml").write_text("name: leaked\nuser: 'TOP-SECRET {problem}'\n")
    return root


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "workspace"
    (root / "models" / "base").mkdir(parents=True)
    (root / "models" / "base" / "config.json").write_text("{}")
    spec = {"model": {"name_or_path": "models/base"}, "run": {"name": "b",
                                                              "output_root": "runs"}}
    (root / "base.yaml").write_text(yaml.safe_dump(spec))
    return Workspace.open(root)


@pytest.fixture()
def no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused request launches nothing (a launch here would be a job writing outside)."""
    from o1pruner import jobs

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a job was launched: {args}")

    monkeypatch.setattr(jobs, "launch", refuse)


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _values(**changes: object) -> list[object]:
    values = dict(zip([leaf.key for leaf in form.leaves()], form.default_values(), strict=True))
    values.update({"run.name": "t", "model.name_or_path": "models/base", **changes})
    return list(values.values())


def _run(ws: Workspace, name: str, **sections: dict[str, object]) -> str:
    """A finished run under runs/ with a trained model and the given spec sections."""
    data: dict[str, dict[str, object]] = {"model": {"name_or_path": "models/base"},
                                          "run": {"name": name}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    root = ws.runs_root / name
    (root / "train" / "final").mkdir(parents=True)
    (root / "train" / "final" / "config.json").write_text("{}")
    (root / "spec.yaml").write_text(RunSpec.model_validate(data).to_yaml())
    (root / "job.json").write_text('{"state": "done"}')
    return f"runs/{name}"


# ---------------------------------------------------- 1. one confinement for every spec
def _grid_lines(outside: Path) -> list[tuple[str, str]]:
    return [(f"run.output_root={outside}", "run.output_root"),
            (f"model.prompt_template={outside / 'template.yaml'}", "model.prompt_template"),
            (f"model.name_or_path={outside / 'model'}", "model.name_or_path"),
            (f"model.cache_dir={outside}", "model.cache_dir"),
            (f"data.local_dir={outside}", "data.local_dir"),
            ("model.trust_remote_code=true", "model.trust_remote_code")]


@pytest.mark.parametrize("case", range(6))
def test_every_sweep_point_is_confined_like_a_build_spec(ws: Workspace, outside: Path,
                                                         case: int, no_launch: None) -> None:
    line, field = _grid_lines(outside)[case]
    before = _listing(outside)
    with pytest.raises(UserError, match=field) as raised:
        start_sweep(ws, "base.yaml", f"reward.lambda=1,2\n{line}", "", "none", 1, "")
    assert "TOP-SECRET" not in str(raised.value)
    assert _listing(outside) == before and sweep_ids(ws) == []
    assert not (ws.root / "runs").exists()
    # the same value typed in the Build tab is refused with the same words
    key, _, value = line.partition("=")
    build = handlers.validate(_values(**{key: True if value == "true" else value}), ws)
    assert build.spec is None and any(p in str(raised.value) for p in build.problems)


def test_trust_remote_code_needs_the_studio_flag(ws: Workspace, tmp_path: Path) -> None:
    values = _values(**{"model.trust_remote_code": True})
    refused = handlers.validate(values, ws)
    assert refused.spec is None and "--allow-remote-code" in refused.by_field[
        "model.trust_remote_code"][0]
    allowed = Workspace.open(ws.root, allow_remote_code=True)
    assert handlers.validate(values, allowed).spec is not None
    parse = build_parser().parse_args
    assert parse(["webui", "--allow-remote-code"]).allow_remote_code
    assert not parse(["webui"]).allow_remote_code


@pytest.mark.parametrize("sections, field", [
    ({"model": {"trust_remote_code": True}}, "model.trust_remote_code"),
    ({"model": {"name_or_path": "OUTSIDE/model"}}, "model.name_or_path"),
    ({"run": {"output_root": "OUTSIDE"}}, "run.output_root"),
    ({"data": {"local_dir": "OUTSIDE"}}, "data.local_dir"),
])
def test_evaluate_export_and_playground_confine_the_runs_spec(
        ws: Workspace, outside: Path, sections: dict[str, dict[str, object]], field: str,
        no_launch: None) -> None:
    """A spec.yaml written outside the UI (the CLI, an editor) is confined when a button
    uses it, as a Build-tab spec is."""
    from webui.playground_tab import generation_refs

    sections = yaml.safe_load(yaml.safe_dump(sections).replace("OUTSIDE", str(outside)))
    run_id = _run(ws, "r", **sections)
    before = _listing(outside)
    with pytest.raises(UserError, match=field):
        handlers.evaluate(run_id, "", "", ws)
    with pytest.raises(UserError, match=field):
        export_argv(ws, run_id, "final", False, None, "exports/r", False)
    with pytest.raises(UserError, match=field):
        generation_refs(ws, run_id, ("models/base", ""))
    assert _listing(outside) == before
    assert not (ws.runs_root / "r" / "exports").exists()
    assert not (ws.runs_root / "r" / "eval").exists()

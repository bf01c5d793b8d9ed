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


# ------------------------------------------------------ 3. only handed-out files served
@pytest.mark.parametrize("root", [".", "./", "WS", "runs/..", ".o1pruner"])
def test_the_workspace_itself_is_never_an_output_root(ws: Workspace, root: str,
                                                      no_launch: None) -> None:
    root = str(ws.root) if root == "WS" else root
    check = handlers.validate(_values(**{"run.output_root": root}), ws)
    assert check.spec is None and "run.output_root" in check.by_field
    with pytest.raises(UserError, match="run.output_root"):
        start_sweep(ws, "base.yaml", f"run.output_root={root}", "", "none", 1, "")


def test_a_recorded_workspace_root_is_not_an_output_root(ws: Workspace) -> None:
    state = ws.root / ".o1pruner"
    state.mkdir()
    (state / "output_roots.json").write_text(f'[".", "{ws.root}", ".o1pruner", "exp"]')
    (ws.root / "exp").mkdir()
    assert ws.output_roots() == [ws.runs_root, ws.root / "exp"]


def _get(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_only_files_the_ui_hands_out_are_served(ws: Workspace) -> None:
    """Not the workspace (.env), not a run folder's files, not a link in a run folder that
    leads out: only the copy of a file a handler hands out."""
    from o1pruner.training.distributed import free_port
    from webui.app import build_app, launch_options

    (ws.root / ".env").write_text("SECRET=1\n")
    state = ws.root / ".o1pruner"
    state.mkdir()
    (state / "output_roots.json").write_text('["."]')  # as an earlier studio recorded it
    report = ws.runs_root / "r" / "report"
    report.mkdir(parents=True)
    (report / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (report / "link.png").symlink_to(ws.root / ".env")
    given = ws.hand_out(report / "plot.png")
    assert given is not None and Path(given).is_relative_to(ws.served_root)
    assert ws.hand_out(report / "link.png") is None
    assert ws.hand_out(ws.root / ".env") is None
    port = free_port()
    options = launch_options(ws, "127.0.0.1", port, None)
    assert options["share"] is False
    demo = build_app(ws.root)
    demo.launch(prevent_thread_lock=True, quiet=True, **options)
    try:
        base = f"http://127.0.0.1:{port}/gradio_api/file="
        assert _get(base + str(ws.root / ".env")) == 403
        assert _get(base + str(report / "plot.png")) == 403
        assert _get(base + given) == 200
    finally:
        demo.close()


# ------------------------------------------- 4. Playground models: the workspace, not cwd
@pytest.mark.parametrize("where", ["typed", "the run's base model"])
def test_a_playground_hub_id_never_loads_a_folder_of_the_servers_cwd(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    from webui.playground_tab import generation_refs

    cwd = tmp_path / "server-cwd"
    (cwd / "org" / "name").mkdir(parents=True)
    (cwd / "org" / "name" / "config.json").write_text("{}")
    monkeypatch.chdir(cwd)
    base = "org/name" if where != "typed" else "models/base"
    run_id = _run(ws, "r", model={"name_or_path": base})
    with pytest.raises(UserError, match="org/name.*working directory"):
        generation_refs(ws, run_id, ("org/name", ""))
    (ws.root / "org" / "name").mkdir(parents=True)  # the workspace's own folder wins
    (ws.root / "org" / "name" / "config.json").write_text("{}")
    _, refs = generation_refs(ws, run_id, ("org/name", ""))
    assert refs == [str(ws.root / "org" / "name"), ""]


def test_an_explorers_data_set_never_loads_a_folder_of_the_servers_cwd(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from webui.explore_tab import run_spec

    cwd = tmp_path / "server-cwd"
    (cwd / "org" / "problems").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    run_id = _run(ws, "r", data={"train": "org/problems"})
    with pytest.raises(UserError, match="data.train: org/problems.*working directory"):
        run_spec(ws, run_id)


# ---------------------------------------------- 5. export zips: no links, no temp pile-up
def _exported(ws: Workspace, outside: Path, run_id: str, finished: float) -> str:
    """A finished export job of `run_id` (as `o1pruner export` leaves it) whose folder
    holds a model and two symbolic links that lead out of it."""
    import json

    from o1pruner.export import export_job_dir
    from o1pruner.rundir import RunDir

    out = ws.root / "exports" / Path(run_id).name
    (out / "sub").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"w" * 1000)
    (outside / "secret.txt").write_text("TOP-SECRET")
    for link, target in [(out / "leak.txt", outside / "secret.txt"), (out / "dir", outside)]:
        if not link.is_symlink():
            link.symlink_to(target)
    job = export_job_dir(RunDir(ws.root / run_id), out)
    job.root.mkdir(parents=True, exist_ok=True)
    (job.root / "job.json").write_text(json.dumps({"state": "done", "finished_at": finished}))
    (job.root / "export.json").write_text(json.dumps({
        "out": str(out), "files": ["config.json", "model.safetensors", "leak.txt"],
        "message": f"exported to {out}"}))
    return ws.relative(job.root)


def test_an_export_zip_holds_no_link_and_nothing_piles_up(
        ws: Workspace, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile
    import zipfile

    from webui.export_tab import export_view

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    run_id = _run(ws, "r")
    zips = []
    for finished in (1.0, 2.0, 3.0):  # the same export done three times
        zips.append(export_view(ws, _exported(ws, outside, run_id, finished))["zip"])
        assert zips[-1] is not None and Path(zips[-1]).is_relative_to(ws.served_root)
        with zipfile.ZipFile(zips[-1]) as archive:
            names = archive.namelist()
            assert sorted(names) == ["r/config.json", "r/model.safetensors"]
            assert all(b"TOP-SECRET" not in archive.read(n) for n in names)
    assert list(system_tmp.iterdir()) == []
    assert [Path(z).exists() for z in zips] == [False, False, True]  # earlier ones removed
    assert sorted(p.name for p in ws.served_root.rglob("*.zip")) == ["r.zip"]


# --------------------------------------------------------- 6. a symlinked .lock is refused
def test_a_symlinked_lock_is_refused_and_its_target_untouched(ws: Workspace,
                                                              outside: Path) -> None:
    from o1pruner.joblock import RunLock

    target = outside / "precious.txt"
    target.write_text("keep me")
    run = ws.runs_root / "t"
    run.mkdir(parents=True)
    (run / ".lock").symlink_to(target)
    with pytest.raises(UserError, match=r"\.lock is a symbolic link"):
        RunLock.acquire(run / ".lock")
    check, started, message = handlers.start(_values(**{"run.name": "t"}), ws)
    assert message.startswith("Error:") and "symbolic link" in message, message
    assert target.read_text() == "keep me"
    assert not (run / "job.json").exists()


@pytest.mark.parametrize("link", ["logs", "logs/worker.log"])
def test_a_symlinked_worker_log_is_refused_before_any_file_changes(
        ws: Workspace, outside: Path, link: str) -> None:
    target = outside / "notes.txt" if link.endswith(".log") else outside
    (outside / "notes.txt").write_text("keep me")
    run = ws.runs_root / "t"
    (run / "logs").mkdir(parents=True)
    if link == "logs":
        (run / "logs").rmdir()
    (run / link).symlink_to(target)
    check, started, message = handlers.start(_values(**{"run.name": "t"}), ws)
    assert message.startswith("Error:") and "symbolic link" in message, message
    assert _listing(outside) == ["model", "model/config.json", "notes.txt", "template.yaml"]
    assert (outside / "notes.txt").read_text() == "keep me"
    assert not (run / "job.json").exists() and not (run / "spec.yaml").exists()


# ------------------------------------------------------- 7. data and model text is text
POISON = ('<img src="http://127.0.0.1:9/a"> ![x](http://127.0.0.1:9/b) <form action='
          '"http://127.0.0.1:9/c"><input type="password"></form> [here](http://127.0.0.1:9/d) '
          '&lt;img&gt; `tick` **bold** # head')
GOLD = "a`b`<img src=http://127.0.0.1:9/g>"


def _rendered(markdown: str) -> tuple[str, str]:
    """(HTML, its visible text) of markdown rendered with raw HTML on, as gr.Markdown does."""
    import html
    import re

    from markdown_it import MarkdownIt

    out = MarkdownIt("commonmark", {"html": True}).render(markdown)
    return out, html.unescape(re.sub(r"<[^>]+>", "", out))


def _assert_text(markdown: str, *shown: str) -> None:
    out, text = _rendered(markdown)
    for tag in ("<img", "<form", "<input", "<a ", "<strong>bold", "<h1"):
        assert tag not in out, (tag, out)
    for part in shown:
        assert part in text, (part, text)


def test_explorers_show_data_and_model_text_as_text() -> None:
    from o1pruner import explore
    from webui.explore_tab import _answer_md, pair_markdown, problem_markdown, sample_markdown

    sample = explore.SampleInfo(0, 5, None, None, "stop", GOLD, True, None, None, None, "",
                                None, POISON)
    problem = explore.ProblemSamples("p<1>", POISON, GOLD, "", 1.0, 5.0, [sample])
    _assert_text(problem_markdown(problem), POISON, GOLD, "p<1>")
    _assert_text(sample_markdown("p<1>", sample), GOLD, "p<1>")
    answer = explore.Answer(1.0, 5, None, None, GOLD, "stop<img src=x>", [POISON])
    _assert_text(_answer_md("base", answer), GOLD, "stop<img src=x>")
    _assert_text(pair_markdown(explore.AnswerPair("p<1>", POISON, GOLD, answer, answer),
                               "trained"), POISON, GOLD)


def test_playground_answers_show_model_text_as_text() -> None:
    from o1pruner.playground import Answer
    from webui.playground_tab import _stats

    done = Answer(model="m<img src=x>", state="done", tokens=3, seconds=1.0,
                  finish_reason="stop", extracted=GOLD, correct=True)
    _assert_text(_stats("A", done), GOLD, "m<img src=x>")
    failed = Answer(model="m", state="error", error=POISON)
    _assert_text(_stats("A", failed), POISON)


def test_a_value_quoted_from_an_imported_file_shows_as_text(ws: Workspace) -> None:
    values, message = handlers.import_yaml_text(f"model: {{dtype: '{GOLD}'}}\n", "x.yaml")
    assert values is None
    _assert_text(message, GOLD, "model.dtype (line 1)")

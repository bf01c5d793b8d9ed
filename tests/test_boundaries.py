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
from tests.test_webui_browser import browser  # noqa: F401 (a fixture)
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
    from webui.explore_tab import run_spec
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
    if field != "model.trust_remote_code":  # the explorers load no model
        with pytest.raises(UserError, match=field):
            run_spec(ws, run_id)
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
    from o1pruner.jobs import RunDir

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
    from o1pruner.jobs import RunLock

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


@pytest.mark.browser
@pytest.mark.slow
def test_a_poisoned_data_set_in_the_explorers_makes_no_outside_request(
        tmp_path: Path, browser) -> None:  # noqa: ANN001, F811
    """Chromium on the Samples and Eval explorer tabs of a run whose problems, gold answers
    and extracted answers carry an image, a markdown image and a form aimed at a listener
    on 127.0.0.1: the text shows as written and the listener receives nothing."""
    import http.server
    import json
    import threading

    from o1pruner.training.distributed import free_port
    from tests.test_explore import prepare_run
    from tests.test_webui_browser import Server

    heard: list[str] = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            heard.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    listener = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Listener)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{listener.server_address[1]}"
    bait = (f'<img src="{url}/img"> ![m]({url}/md) <form action="{url}/form" method="post">'
            f'<input type="password" name="pw"></form> `tick`')
    ws = tmp_path / "workspace"
    run = prepare_run(ws)

    def poison(path: Path, fields: dict[str, str]) -> None:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            row.update({k: v for k, v in fields.items() if k in row})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    poison(run / "presample" / "problems.jsonl", {"problem": "P " + bait, "gold": "g`" + bait})
    poison(ws / "bench.jsonl", {"question": "Q " + bait})
    for gen in (run / "eval").rglob("generations.jsonl"):
        poison(gen, {"gold": "g`" + bait, "extracted": "x`" + bait})
    server = Server(ws)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(server.url)
        page.get_by_role("tab", name="Samples").click()
        page.locator("#samples-problem").filter(has_text="P <img src=").wait_for(
            timeout=60_000)
        page.get_by_role("tab", name="Eval explorer").click()
        page.locator("#evx-problem").filter(has_text="Q <img src=").wait_for(timeout=60_000)
        page.locator("#evx-left-stats").filter(has_text="x`<img").wait_for(timeout=30_000)
        assert page.locator("#evx-problem").inner_text().count("`") >= 2  # gold kept whole
        page.wait_for_timeout(2000)
        assert page.locator("img[src^='http://127.0.0.1'], form[action^='http']").count() == 0
    finally:
        page.close()
        server.kill()
        listener.shutdown()
    assert heard == [], heard


# ------------------------------------------ 8. any YAML a constructor chokes on: one line
ODD_YAML = {
    "bad date": "run: {name: x, seed: 1}\nreward: {lambda: !!timestamp 2024-02-30}\n",
    "float": "run: {name: x}\nreward: {lambda: !!float abc}\n",
    "huge int": "run: {name: x}\nrun2: " + "9" * 5000 + "\n",
    "hex int": "run: {name: x}\nreward: {lambda: !!int 0x}\n",
    "bool": "run: {name: x}\nreward: {lambda: !!bool maybe}\n",
    "set": "run: {name: x}\nreward: !!set {lambda}\n",
    "binary": "run: {name: x}\nreward: {lambda: !!binary aGk=}\n",
    "deep": "run: {name: x}\nreward: " + "[" * 3000 + "]" * 3000 + "\n",
}


@pytest.mark.parametrize("case", list(ODD_YAML))
def test_any_constructor_error_is_one_message_with_its_line(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from o1pruner import jobs
    from o1pruner.cli import main as cli_main

    text = ODD_YAML[case]
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert cli_main(["validate", str(path)]) == 2  # the CLI
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err, err
    values, message = handlers.import_yaml_text(text, "odd.yaml")  # Import
    assert values is None and "line 2" in message, message
    value = text.splitlines()[1].split(": ", 1)[1]
    good = tmp_path / "good.yaml"
    good.write_text("run: {name: x}\n")
    if case != "deep":
        with pytest.raises(Exception, match="line 1") as raised:  # --set
            load_spec_file(good, [f"reward={value}"])
        assert type(raised.value).__name__ == "SpecError"
    run = tmp_path / "runs" / "odd"  # the history
    run.mkdir(parents=True)
    (run / "spec.yaml").write_text(text)
    (row,) = jobs.list_runs(tmp_path / "runs")
    assert row["state"] == "unreadable" and "line 2" in row["message"], row


def load_spec_file(path: Path, overrides: list[str]) -> object:
    from o1pruner.specio import load_spec

    return load_spec(path, overrides)


def test_dates_stay_text_and_duplicate_keys_are_refused() -> None:
    from o1pruner.specio import SpecError, load_spec_text

    assert load_spec_text("run: {name: 2024-02-30}\n").run.name == "2024-02-30"
    assert load_spec_text("run: {name: 2024-01-02}\n").run.name == "2024-01-02"
    with pytest.raises(SpecError, match="duplicate key 'name'.*line 3"):
        load_spec_text("run:\n  name: a\n  name: b\n")


def _odd_runs(root: Path) -> None:
    """Run folders holding every kind of odd file the studio reads at start-up."""
    deep_json = "[" * 100_000 + "]" * 100_000
    big = "9" * 5000
    files = {
        "date": {"spec.yaml": "run: {name: 2024-02-30}\n"},
        "float": {"spec.yaml": "reward: {lambda: !!float abc}\n"},
        "int": {"spec.yaml": f"run: {{seed: {big}}}\n"},
        "deep": {"spec.yaml": "a: " + "[" * 3000 + "]" * 3000 + "\n"},
        "binary": {"spec.yaml": b"\xff\xfe\x00bad", "job.json": b"\xff"},
        "job-int": {"spec.yaml": "run: {name: job-int}\n", "job.json": f'{{"pid": {big}}}'},
        "job-deep": {"spec.yaml": "run: {name: job-deep}\n", "job.json": deep_json},
        "job-list": {"job.json": "[1, 2]"},
        "results": {"spec.yaml": "run: {name: results}\n",
                    "eval/results.json": f'{{"methods": {deep_json}}}'},
        "events": {"spec.yaml": "run: {name: events}\n", "events.jsonl": deep_json + "\n"},
    }
    for name, content in files.items():
        for rel, data in content.items():
            path = root / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    (root / "folder-spec" / "spec.yaml").mkdir(parents=True)


def test_the_studio_starts_with_any_run_folder_content(ws: Workspace) -> None:
    from webui.app import build_app

    _odd_runs(ws.runs_root)
    demo = build_app(ws.root)
    assert demo is not None
    rows = {r["id"]: r for r in handlers.runs(ws)}
    assert rows["runs/date"]["state"] != "unreadable"  # a date is a name like any other
    for name in ("float", "int", "deep", "binary", "job-int", "job-deep"):
        assert rows[f"runs/{name}"]["state"] == "unreadable", rows[f"runs/{name}"]
    assert len(handlers.history_table(ws)) == len(rows)


# ------------------------------------------------ 9. sizes: linear, capped, checked first
def test_validation_is_linear_and_capped_in_unknown_keys(monkeypatch) -> None:
    """16,000 unknown keys: 50 problem lines and a count, and only those 50 are looked up
    in the YAML (each lookup walks the document: one per key would be quadratic)."""
    from o1pruner import specio
    from o1pruner.specio import SpecError, load_spec_text

    lookups = []
    line_of = specio._line_of
    monkeypatch.setattr(specio, "_line_of", lambda *a: lookups.append(a) or line_of(*a))
    text = "run:\n" + "".join(f"  k{i}: {i}\n" for i in range(16_000))
    with pytest.raises(SpecError) as raised:
        load_spec_text(text)
    problems = raised.value.problems
    assert len(problems) == 51 and problems[-1].startswith("... and 15950 more")
    assert problems[0].startswith("run.k0 (line 2): unknown field")
    assert len(lookups) == 50


def test_load_and_import_check_the_size_before_reading(ws: Workspace) -> None:
    import tracemalloc

    from o1pruner.safeyaml import MAX_BYTES
    from webui.app import launch_options

    big = ws.root / "big.yaml"
    with big.open("wb") as out:
        out.truncate(64 * 1024 * 1024)  # sparse: 64 MiB that cost no disk
    tracemalloc.start()
    try:
        for path, workspace in ((str(big), None), ("big.yaml", ws)):
            values, message = handlers.import_yaml_file(path, workspace)
            assert values is None and "is more than the" in message, message
        assert tracemalloc.get_traced_memory()[1] < 4 * 1024 * 1024
    finally:
        tracemalloc.stop()
    assert launch_options(ws, "127.0.0.1", 1, None)["max_file_size"] == MAX_BYTES


# ------------------------------------------------------------ 10. sweeps have bounds
def test_a_sweep_is_bounded_in_points_and_runs_at_a_time(ws: Workspace, no_launch: None,
                                                         monkeypatch) -> None:
    from o1pruner import sweep
    from o1pruner.sweep import MAX_PARALLEL, MAX_POINTS, plan_sweep

    built = []
    point_run_spec = sweep.point_run_spec
    monkeypatch.setattr(sweep, "point_run_spec",
                        lambda *a: built.append(a) or point_run_spec(*a))
    values = ",".join(str(v) for v in range(1, 11))
    grid = f"reward.lambda={values}\npresample.k={values}\ntrain.epochs={values}"
    with pytest.raises(UserError, match=f"2,000 runs.*at most {MAX_POINTS}"):
        start_sweep(ws, "base.yaml", grid, "0,1", "none", 1, "")
    huge = [f"reward.lambda={values}", f"presample.k={values}", f"train.epochs={values}",
            f"run.seed={values}", f"train.learning_rate={values}"]
    with pytest.raises(UserError, match="100,000 runs"):
        plan_sweep(ws.root / "base.yaml", huge)
    assert built == []  # both refused from the counts, before any point's spec is built
    for parallel in (0, MAX_PARALLEL + 1):
        with pytest.raises(UserError, match="runs at a time"):
            start_sweep(ws, "base.yaml", "reward.lambda=1,2", "", "none", parallel, "")
    assert sweep_ids(ws) == []


# ------------------------------------------- 11. history polling: only running runs checked
def test_the_history_checks_processes_only_of_runs_whose_state_says_running(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from o1pruner.jobs import control

    for i in range(30):
        state = ("done", "failed", "stopped")[i % 3]
        root = ws.runs_root / f"old{i}"
        root.mkdir(parents=True)
        (root / "job.json").write_text(json.dumps({
            "state": state, "pid": 2**22 + i, "pgid": 2**22 + i, "start": 1,
            "started_at": 1.0, "finished_at": 2.0, "exit_code": 0}))
    (ws.runs_root / "live").mkdir()
    (ws.runs_root / "live" / "job.json").write_text(json.dumps({
        "state": "running", "pid": 2**22 + 99, "pgid": 2**22 + 99, "start": 1}))
    checked: list[str] = []
    alive = control._alive

    def counting(run: object, job: dict[str, object]) -> bool:
        checked.append(run.root.name)  # type: ignore[attr-defined]
        return alive(run, job)  # type: ignore[arg-type]

    monkeypatch.setattr(control, "_alive", counting)
    rows = {r["id"]: r["state"] for r in handlers.runs(ws)}
    assert checked == ["live"]
    assert rows["runs/old0"] == "done" and rows["runs/old1"] == "failed"
    assert rows["runs/live"] == "failed"  # its process is gone: settled as before


# ------------------------------------------------------------------------ 12. smaller
def test_a_nul_character_in_a_spec_is_refused_with_its_field(ws: Workspace) -> None:
    from o1pruner.specio import SpecError, load_spec_text

    with pytest.raises(SpecError, match=r"model.name_or_path \(line 2\): contains a NUL"):
        load_spec_text('run: {name: x}\nmodel: {name_or_path: "models/a\\0b"}\n')
    check = handlers.validate(_values(**{"model.name_or_path": "models/a\x00b"}), ws)
    assert check.spec is None and "NUL" in check.by_field["model.name_or_path"][0]
    with pytest.raises(UserError, match="model"):  # the Evaluate panel's model box
        ws.check_model("a\x00b", "model")


def test_a_stop_timeout_under_a_second_is_refused() -> None:
    from o1pruner.specio import SpecError, load_spec_text

    with pytest.raises(SpecError, match="run.stop_timeout"):
        load_spec_text("run: {name: x, stop_timeout: 1e-300}\n")


def test_a_playground_problem_has_a_length_cap() -> None:
    from o1pruner.playground import MAX_PROBLEM_CHARS, Playground

    playground = Playground()
    with pytest.raises(UserError, match="at most 20,000 characters"):
        playground.start(RunSpec(), ["pypi:none"], "x" * (MAX_PROBLEM_CHARS + 1))
    assert playground._lock.acquire(blocking=False)  # nothing was started

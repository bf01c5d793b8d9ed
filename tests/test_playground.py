"""The playground's generation (o1pruner.playground) on real tiny models: the answer is the
one the pipeline generates, measured and graded as evaluation does; one comparison at a
time; Stop ends it within a token; at most two models stay loaded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from o1pruner.playground import (
    CHARS_PER_SECOND,
    MAX_PAUSE_S,
    Busy,
    Playground,
    Settings,
    find_model_dirs,
    problem_sources,
    source_problems,
    update_pause,
)
from o1pruner.playground_answer import Answer
from o1pruner.specio import spec_from_dict
from tests.tiny_model import build_tiny_model

PROBLEM = "Mia has 12 apples. She buys 7 more and gives 5 away. How many apples now?"
ANSWER = "So the answer is \\boxed{14}."


def build_scripted_model(path: Path, text: str, loop: bool = False, **tokenizer: Any) -> Path:
    """The tiny Llama rewired to write `text` (then its end-of-turn token) after any prompt,
    greedy or sampled: a deterministic bigram machine. Attention and MLP outputs are zeroed,
    so the last hidden state is the current token's embedding; chain token k has basis
    vector k as embedding and lm_head maps it to token k + 1; every other token maps to the
    first one. `loop`: the last token leads back to the first (it never stops). The tokens
    of `text` must be distinct (checked)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    build_tiny_model(path, **tokenizer)
    tok = AutoTokenizer.from_pretrained(path)
    chain = tok(text, add_special_tokens=False)["input_ids"]
    chain += [chain[0]] if loop else [tok.convert_tokens_to_ids("<|im_end|>")]
    body = chain[:-1] if loop else chain
    if len(set(body)) != len(body):
        raise ValueError(f"{text!r}: its tokens repeat ({tok.convert_ids_to_tokens(chain)})")
    state = load_file(path / "model.safetensors")
    hidden = state["model.norm.weight"].shape[0]
    for name in state:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            state[name].zero_()
    embed = torch.zeros_like(state["model.embed_tokens.weight"])
    head = torch.zeros_like(state["lm_head.weight"])
    embed[:, hidden - 1] = 1.0  # any other token ...
    head[chain[0], hidden - 1] = 20.0  # ... starts the text
    for k, (token, following) in enumerate(zip(chain[:-1], chain[1:], strict=True)):
        embed[token] = 0.0
        embed[token, k] = 1.0
        head[following, k] = 20.0
    state["model.embed_tokens.weight"], state["lm_head.weight"] = embed, head
    state["model.norm.weight"].fill_(1.0)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return path


def make_spec(model: Path, **sections: Any):
    data: dict[str, Any] = {
        "model": {"name_or_path": str(model), "prompt_template": "generic", "dtype": "float32"},
        "data": {"train": "arithmetic_train", "train_limit": 3, "eval_limit": 2},
        "eval": {"benchmarks": ["arithmetic_test"]},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return spec_from_dict(data)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scripted_model(tmp_path_factory.mktemp("scripted") / "model", ANSWER)


@pytest.fixture(scope="module")
def looping(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scripted_model(tmp_path_factory.mktemp("looping") / "model", ANSWER,
                                loop=True)


def test_a_greedy_answer_is_the_one_the_evaluation_engine_generates(tiny_model_dir: Path
                                                                     ) -> None:
    from o1pruner.prompts import build_prompt, load_template
    from o1pruner.sampling.engines import create_engine, encode_prompt

    spec = make_spec(tiny_model_dir)
    engine = create_engine(spec.model, "hf", batch_size=1)
    prompt = build_prompt(engine.tokenizer, load_template(spec.model), PROBLEM)
    expected = engine.generate([prompt], 1, temperature=0.0, top_p=1.0, max_new_tokens=12)[0][0]
    playground = Playground()
    *_, final = playground.compare(spec, [str(tiny_model_dir)], PROBLEM, "14",
                                   Settings(max_new_tokens=12))
    (answer,) = final
    assert answer.state == "done"
    assert answer.tokens == expected.num_tokens
    assert answer.text == expected.text
    assert answer.finish_reason == expected.finish_reason
    assert answer.prompt_tokens == len(encode_prompt(engine.tokenizer, prompt))
    assert answer.correct is False  # a random model; graded against the gold


def test_both_answers_are_streamed_then_graded(scripted: Path, tiny_model_dir: Path) -> None:
    spec = make_spec(scripted)
    snapshots = list(Playground().compare(spec, [str(scripted), str(tiny_model_dir)], PROBLEM,
                                          "14", Settings(max_new_tokens=20), interval=0.01))
    right, other = snapshots[-1]
    assert right.state == other.state == "done"
    assert right.text == ANSWER and right.finish_reason == "stop"
    assert right.tokens == 13  # the text's 12 tokens and the end-of-turn token
    assert right.extracted == "14" and right.correct is True
    assert right.thinks is False and right.answer_tokens == 13
    assert other.tokens <= 20 and other.correct is False
    assert right.seconds > 0 and right.tokens_per_s > 0
    # model B waits until model A is done: they never run at once
    assert all(b.state == "waiting" for a, b in snapshots if a.state != "done")


def test_a_wrong_or_ungraded_answer(scripted: Path) -> None:
    playground = Playground()
    *_, (wrong,) = playground.compare(make_spec(scripted), [str(scripted)], PROBLEM, "7")
    assert wrong.extracted == "14" and wrong.correct is False
    *_, (ungraded,) = playground.compare(make_spec(scripted), [str(scripted)], PROBLEM, "")
    assert ungraded.extracted == "14" and ungraded.correct is None


def test_thinking_and_answer_tokens_are_split_at_the_closing_tag(tmp_path: Path) -> None:
    model = build_scripted_model(tmp_path / "r1", "Let me think: 12 + 7 = 19, minus 5.</think>\\boxed{14}",
                                 thinking="r1")
    spec = make_spec(model)
    *_, (answer,) = Playground().compare(spec, [str(model)], PROBLEM, "14")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    thinking = len(tok("Let me think: 12 + 7 = 19, minus 5.</think>", add_special_tokens=False)["input_ids"])
    assert answer.thinks is True
    assert answer.thinking_tokens == thinking
    assert answer.answer_tokens == answer.tokens - thinking
    assert answer.correct is True


def test_stop_ends_the_generation_and_skips_the_next_model(looping: Path, scripted: Path) -> None:
    playground = Playground()
    playground.start(make_spec(looping), [str(looping), str(scripted)], PROBLEM, "14",
                     Settings(max_new_tokens=100_000))
    deadline = time.monotonic() + 60
    while playground.answers[0].tokens < 5:
        assert time.monotonic() < deadline, "no tokens came"
        time.sleep(0.05)
    with pytest.raises(Busy):  # one comparison at a time
        playground.start(make_spec(scripted), [str(scripted)], PROBLEM)
    stopped_at = time.monotonic()
    playground.stop()
    first, second = playground.wait(timeout=60)
    assert time.monotonic() - stopped_at < 30
    assert first.state == "stopped" and first.finish_reason == "stopped"
    assert 5 <= first.tokens < 100_000 and first.text.startswith("So the answer")
    assert second.state == "stopped" and second.tokens == 0
    assert not playground.busy
    *_, (again,) = playground.compare(make_spec(scripted), [str(scripted)], PROBLEM, "14")
    assert again.correct is True  # the next comparison runs normally


def test_closing_the_updates_stops_the_generation(looping: Path) -> None:
    playground = Playground()
    updates = playground.compare(make_spec(looping), [str(looping)], PROBLEM, "",
                                 Settings(max_new_tokens=100_000), interval=0.01)
    for snapshot in updates:
        if snapshot[0].tokens >= 3:
            break
    updates.close()  # what Gradio does when an event is cancelled
    (answer,) = playground.wait(timeout=60)
    assert answer.state == "stopped" and not playground.busy


def test_a_long_answer_reaches_the_page_less_often() -> None:
    # each update redraws the answers whole: the pause grows with their text, up to 2 s
    short, longer = Answer("a", text="x" * 100), Answer("b", text="y" * 10_000)
    assert update_pause(0.1, [short]) == 0.1
    assert update_pause(0.1, [short, longer]) == pytest.approx(10_100 / CHARS_PER_SECOND)
    assert update_pause(0.1, [Answer("a", text="z" * 1_000_000)]) == MAX_PAUSE_S
    assert update_pause(5.0, [longer]) == 5.0  # a slower interval asked for stays


def test_at_most_two_models_stay_loaded(tiny_model_dir: Path, scripted: Path,
                                        looping: Path) -> None:
    playground = Playground(cache_size=2)
    spec = make_spec(scripted)
    settings = Settings(max_new_tokens=2)
    list(playground.compare(spec, [str(scripted), str(tiny_model_dir)], PROBLEM, "",
                            settings))
    first = playground.models.get(spec.model, str(scripted)).model
    list(playground.compare(spec, [str(scripted)], PROBLEM, "", settings))
    assert playground.models.get(spec.model, str(scripted)).model is first  # not reloaded
    list(playground.compare(spec, [str(looping)], PROBLEM, "", settings))
    assert playground.models.paths() == [str(scripted), str(looping)]


def test_a_model_that_cannot_load_is_an_error_on_its_side_only(tmp_path: Path,
                                                               scripted: Path) -> None:
    *_, (broken, fine) = Playground().compare(
        make_spec(scripted), [str(tmp_path / "missing"), str(scripted)], PROBLEM, "14")
    assert broken.state == "error" and "no such directory" in broken.error
    assert fine.state == "done" and fine.correct is True


def test_problems_come_from_the_runs_data_sets(scripted: Path) -> None:
    spec = make_spec(scripted)
    assert list(problem_sources(spec)) == ["train: arithmetic_train", "eval: arithmetic_test"]
    assert len(source_problems(spec, "train: arithmetic_train")) == 3
    evals = source_problems(spec, "eval: arithmetic_test")
    assert len(evals) == 2 and all(p.gold for p in evals)


def test_model_folders_are_found_but_not_inside_checkpoints(tmp_path: Path,
                                                            scripted: Path) -> None:
    import shutil

    for where in ("models/a", "runs/r/train/final", "runs/r/train/checkpoints/step-1/model",
                  ".hidden/b"):
        shutil.copytree(scripted, tmp_path / where)
    found = [p.relative_to(tmp_path).as_posix() for p in find_model_dirs(tmp_path)]
    assert found == ["models/a", "runs/r/train/final"]


def test_the_ui_loads_only_models_inside_the_workspace(tmp_path: Path, scripted: Path) -> None:
    import shutil

    from o1pruner.errors import UserError
    from webui.playground_tab import resolve_model
    from webui.workspace import Workspace

    ws = Workspace.open(tmp_path)
    shutil.copytree(scripted, tmp_path / "models" / "mine")
    (tmp_path / "models" / "link").symlink_to(scripted)
    assert resolve_model(ws, "models/mine", "model A") == str(tmp_path / "models" / "mine")
    for outside in (str(scripted), "models/link", "../x"):
        with pytest.raises(UserError, match="outside the workspace"):
            resolve_model(ws, outside, "model A")
    with pytest.raises(UserError, match="no such directory"):
        resolve_model(ws, "models/missing", "model B")
    assert resolve_model(ws, "pypi:smollm2-135m-instruct", "model A") == \
        "pypi:smollm2-135m-instruct"
    assert resolve_model(ws, "org/hub-model", "model A") == "org/hub-model"


# ------------------------------------------------------------------ browser sessions
def _generating(playground: Any, tokens: int = 3) -> None:
    deadline = time.monotonic() + 60
    while not (playground.answers and playground.answers[0].tokens >= tokens):
        assert time.monotonic() < deadline, "no tokens came"
        time.sleep(0.05)


def test_each_session_has_its_own_comparison_and_stop(looping: Path, scripted: Path) -> None:
    from o1pruner.playground import Sessions

    sessions = Sessions()
    one, two = sessions.get("one"), sessions.get("two")
    assert one is not two and sessions.get("one") is one
    one.start(make_spec(looping), [str(looping)], PROBLEM, "", Settings(max_new_tokens=100_000))
    _generating(one)
    *_, (answer,) = two.compare(make_spec(scripted), [str(scripted)], PROBLEM, "14")
    assert answer.correct is True and answer.model == str(scripted)  # not Busy
    assert [a.model for a in one.answers] == [str(looping)]  # one's answers are its own
    two.stop()  # two's Stop leaves one generating
    before = one.answers[0].tokens
    _generating(one, before + 3)
    assert one.busy and one.answers[0].state == "generating"
    sessions.close("one")  # the page is gone: its comparison stops
    (stopped,) = one.wait(timeout=60)
    assert stopped.state == "stopped" and sessions.peek("one") is None


def test_sessions_share_one_bounded_model_cache(scripted: Path, looping: Path) -> None:
    from o1pruner.playground import Sessions

    sessions = Sessions(cache_size=1)
    settings = Settings(max_new_tokens=2)
    list(sessions.get("one").compare(make_spec(scripted), [str(scripted)], PROBLEM, "",
                                     settings))
    list(sessions.get("two").compare(make_spec(looping), [str(looping)], PROBLEM, "",
                                     settings))
    assert sessions.get("one").models is sessions.get("two").models is sessions.models
    assert sessions.models.paths() == [str(looping)]  # one model for both sessions


def test_the_comparisons_running_at_once_are_capped(looping: Path, scripted: Path) -> None:
    from o1pruner.playground import Sessions

    sessions = Sessions(max_generating=1)
    one = sessions.get("one")
    one.start(make_spec(looping), [str(looping)], PROBLEM, "", Settings(max_new_tokens=100_000))
    _generating(one)
    with pytest.raises(Busy, match="other browser sessions"):
        sessions.get("two").start(make_spec(scripted), [str(scripted)], PROBLEM)
    assert not sessions.get("two").busy
    one.stop()
    one.wait(timeout=60)
    *_, (answer,) = sessions.get("two").compare(make_spec(scripted), [str(scripted)], PROBLEM,
                                                "14")
    assert answer.correct is True


def test_at_most_max_sessions_are_kept_the_least_recently_used_idle_one_goes(
        looping: Path) -> None:
    from o1pruner.playground import Sessions

    sessions = Sessions(max_sessions=2)
    busy = sessions.get("busy")
    busy.start(make_spec(looping), [str(looping)], PROBLEM, "", Settings(max_new_tokens=100_000))
    sessions.get("idle")
    sessions.get("new")  # "busy" is the least recently used, but it is generating
    assert sessions.peek("busy") is busy and sessions.peek("idle") is None
    assert len(sessions) == 2
    busy.stop()
    busy.wait(timeout=60)


def test_two_pages_generate_and_stop_apart(tmp_path: Path, looping: Path,
                                           scripted: Path) -> None:
    """The tab's handlers with two pages' states: each page sees its own model and answers,
    and a Stop acts on its own page's generation only."""
    import shutil
    import threading

    from webui.playground_tab import PlaygroundPage
    from webui.workspace import Workspace

    shutil.copytree(scripted, tmp_path / "models" / "scripted")
    shutil.copytree(looping, tmp_path / "models" / "looper")
    (tmp_path / "runs" / "r").mkdir(parents=True)
    spec = make_spec(Path("models/scripted"))
    (tmp_path / "runs" / "r" / "spec.yaml").write_text(spec.to_yaml())
    page = PlaygroundPage(Workspace.open(tmp_path))
    first: list[list[Any]] = []  # page one's outputs, as they come

    def page_one() -> None:
        for out in page.generate("one", "runs/r", "models/looper", "", PROBLEM, "", 100_000, 0):
            first.append(out)

    worker = threading.Thread(target=page_one, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not (first and "generating" in first[-1][1]):
            assert time.monotonic() < deadline, first[-1:] or "page one shows nothing"
            time.sleep(0.05)
        *_, second = page.generate("two", "runs/r", "models/scripted", "", PROBLEM, "14", 64,
                                   0)
        message, stats_a, text_a, stats_b, text_b, used = second
        assert message == "" and used == [0]
        assert "scripted" in stats_a and "right" in stats_a and text_a == ANSWER
        assert "not used" in stats_b and text_b == ""
        assert page.stop("two", used, "models/scripted", "")[0] == "stopped"
        seen = len(first)
        while len(first) < seen + 3:  # page one goes on
            assert time.monotonic() < deadline, first[-1]
            time.sleep(0.05)
        assert "looper" in first[-1][1] and "generating" in first[-1][1]
        assert all("scripted" not in out[1] for out in first)
    finally:
        message, stats_a, text_a, *_ = page.stop("one", [0], "models/looper", "")
        worker.join(timeout=60)
    assert message == "stopped" and "finish: stopped" in stats_a
    assert text_a.startswith("So the answer")


def test_a_closed_pages_session_is_let_go(tmp_path: Path) -> None:
    """The page's session key is a gr.State whose deletion (Gradio deletes a closed page's
    state) closes its session: its comparison stops and its place is freed."""
    import gradio as gr

    from webui.app import build_app
    from webui.playground_tab import new_session_key

    demo = build_app(tmp_path)
    [state] = [b for b in demo.blocks.values()
               if isinstance(b, gr.State) and b.value is new_session_key]
    sessions = state.delete_callback.__self__
    key = new_session_key()
    sessions.get(key)
    assert sessions.peek(key) is not None
    state.delete_callback(key)  # what Gradio calls with the page's value
    assert sessions.peek(key) is None and len(sessions) == 0

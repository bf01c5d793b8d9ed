"""Models you can use: train.save_model_steps writes loadable models of intermediate steps,
and `o1pruner export` turns a run (its final model, a step model or a resumable checkpoint)
into a standalone Hugging Face folder with a model card; tiny real runs (full, freeze, LoRA)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from o1pruner.cli import main as cli_main
from o1pruner.errors import UserError
from o1pruner.evaluation import run_eval
from o1pruner.export import export_job_dir, export_model, plan_export, read_result
from o1pruner.files import read_json
from o1pruner.jobs import run_dir_for
from o1pruner.models import load_tokenizer
from o1pruner.specio import save_spec
from o1pruner.training import run_train
from tests.presample_files import make_spec, write_presample

REPO = Path(__file__).resolve().parents[1]
MARKER = ".o1pruner-export.json"  # what an export writes into its folder
EVAL = {"benchmarks": ["arithmetic_test"], "max_new_tokens": 4, "engine": "hf",
        "batch_size": 2}


def trained(model_dir, root, name, n_problems=6, **train):
    """A trained tiny run (bf16 autocast, 6 problems x m=2 rows, batch 2: 6 steps), its
    spec saved as <root>/<name>.yaml."""
    spec = make_spec(model_dir, root, name=name,
                     train={"precision": "bf16", "keep_last_checkpoint": True, **train},
                     data={"eval_limit": 2}, eval=EVAL,
                     model={"prompt_template": "generic", "dtype": "float32"})
    write_presample(run_dir_for(spec).root, load_tokenizer(spec.model, str(model_dir)),
                    n_problems=n_problems)
    save_spec(spec, root / f"{name}.yaml")
    return spec, run_train(spec)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, root):
    """Full fine-tuning with a model every 2 steps, evaluated against its base."""
    spec, run = trained(tiny_model_dir, root, "full", save_model_steps=2)
    run_eval(spec)
    return spec, run


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, root):
    return trained(tiny_model_dir, root, "lora", finetuning="lora", lora_rank=4,
                   save_model_steps=3)


def weights(folder):
    """{name: tensor} of a folder's safetensors, as saved (dtype included)."""
    from safetensors.torch import load_file

    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        out.update(load_file(path))
    return out


def dtypes(folder):
    return {str(v.dtype) for v in weights(folder).values()}


def logits(folder, ids=(5, 17, 42, 99, 7, 3)):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([list(ids)])).logits


# ------------------------------------------------------------------ train.save_model_steps
def test_a_model_is_saved_every_n_steps_and_at_the_last(full_run):
    from transformers import AutoModelForCausalLM

    _, run = full_run
    train = run.root / "train"
    models = train / "models"
    assert sorted(p.name for p in models.iterdir()) == ["step-2", "step-4", "step-6"]
    for step in (2, 4, 6):
        folder = models / f"step-{step}"
        assert dtypes(folder) == {"torch.bfloat16"}  # train.save_dtype auto: bf16 training
        assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
        assert (folder / "tokenizer.json").exists() and (folder / "chat_template.jinja").exists()
        AutoModelForCausalLM.from_pretrained(folder)
    assert not torch.equal(weights(models / "step-2")["lm_head.weight"],
                           weights(models / "step-4")["lm_head.weight"])
    # the last step is the final model, hard-linked rather than written twice
    assert os.path.samefile(models / "step-6" / "model.safetensors",
                            train / "final" / "model.safetensors")


def test_lora_step_models_hold_the_merged_model_and_the_adapter(lora_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec, run = lora_run
    step = run.root / "train" / "models" / "step-3"
    assert (step / "config.json").exists() and (step / "adapter" / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(spec.model.name_or_path, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, step / "adapter").eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
    assert torch.allclose(logits(step), expected, atol=0.05)  # both bf16 weights
    assert sorted(p.name for p in (run.root / "train" / "models").iterdir()) == [
        "step-3", "step-6"]


def test_eval_of_a_step_model_is_an_adhoc_evaluation(full_run, root):
    _, run = full_run
    step = run.root / "train" / "models" / "step-2"
    assert cli_main(["eval", str(root / "full.yaml"), "--model", str(step)]) == 0
    adhoc = next((run.root / "eval" / "adhoc").glob("models-step-2-*"))
    results = read_json(adhoc / "results.json")
    assert results["models"]["trained"]["path"] == str(step)
    assert results["methods"] == ["base", "trained"]
    assert read_json(run.root / "eval" / "results.json")["models"]["trained"]["path"] == str(
        run.root / "train" / "final")  # the run's own evaluation is left as it was


# ------------------------------------------------------------------------------ export
def test_export_of_the_final_model_loads_generates_and_has_a_model_card(
        full_run, root, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, run = full_run
    out = tmp_path / "full-model"
    result = export_model(run.root, out)
    assert result.kind == "model" and result.source == "train/final"
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "generation_config.json", "README.md"} <= set(result.files)
    assert not any(n.startswith("adapter") for n in result.files)
    assert dtypes(out) == {"torch.bfloat16"}
    assert all(torch.equal(v, weights(run.root / "train" / "final")[k])
               for k, v in weights(out).items())
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 7?"}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 5
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert "| method | lh |" in card and "| fine-tuning | full |" in card
    assert "| arithmetic_test | 2 |" in card and "| AVG |" in card  # the run's eval results
    assert "output_root" not in card  # no local paths of the training machine
    assert str(root) not in card and str(tiny_model_dir) not in card
    assert "model (a local folder)" in card  # the base model, by its folder's name
    job = export_job_dir(run, out)
    assert job.read_job()["state"] == "done" and read_result(job)["out"] == str(out)


@pytest.mark.parametrize("dtype,expected", [("fp32", torch.float32), ("fp16", torch.float16)])
def test_dtype_converts_every_weight(full_run, tmp_path, dtype, expected):
    _, run = full_run
    out = tmp_path / dtype
    export_model(run.root, out, dtype=dtype, checkpoint=4)
    source = weights(run.root / "train" / "models" / "step-4")
    saved = weights(out)
    assert set(saved) == set(source) and {v.dtype for v in saved.values()} == {expected}
    assert all(torch.equal(saved[k], v.to(expected)) for k, v in source.items())
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == config["torch_dtype"] == str(expected).removeprefix("torch.")


def test_a_resumable_checkpoint_exports_like_the_final_model(tiny_model_dir, root, tmp_path):
    # no step models: --checkpoint 2 builds the model from train/checkpoints/step-2 (the
    # fp32 master weights in accelerate's model.safetensors), the final model's weights
    _, run = trained(tiny_model_dir, root, "freeze", n_problems=2, finetuning="freeze",
                     freeze_trainable_layers=1)
    assert [p.name for p in (run.root / "train" / "checkpoints").iterdir()] == ["step-2"]
    assert not (run.root / "train" / "models").exists()
    out = tmp_path / "from-checkpoint"
    result = export_model(run.root, out, checkpoint=2)
    assert result.source == "train/checkpoints/step-2"
    final = weights(run.root / "train" / "final")
    assert dtypes(out) == {"torch.bfloat16"}
    assert all(torch.equal(v, final[k]) for k, v in weights(out).items())
    assert set(weights(out)) == set(final)
    assert (out / "generation_config.json").exists() and (out / "tokenizer.json").exists()


def test_lora_exports_the_adapter_unless_merged(lora_run, tmp_path):
    from peft import AutoPeftModelForCausalLM

    _, run = lora_run
    adapter = tmp_path / "adapter"
    result = export_model(run.root, adapter)
    assert result.kind == "adapter" and "--merge-lora" in result.message
    assert (adapter / "adapter_config.json").exists() and not (adapter / "config.json").exists()
    assert "library_name: peft" in (adapter / "README.md").read_text()
    merged = tmp_path / "merged"
    assert export_model(run.root, merged, merge_lora=True).kind == "model"
    assert not (merged / "adapter_config.json").exists()
    peft_model = AutoPeftModelForCausalLM.from_pretrained(adapter, dtype=torch.float32).eval()
    with torch.no_grad():
        adapted = peft_model(input_ids=torch.tensor([[5, 17, 42, 99, 7, 3]])).logits
    assert torch.allclose(logits(merged), adapted, atol=0.05)  # both from bf16 weights
    assert torch.equal(logits(merged), logits(run.root / "train" / "final"))


def test_lora_checkpoint_merged_on_export_equals_the_merged_final(lora_run, tmp_path):
    import shutil

    _, run = lora_run
    step_models = run.root / "train" / "models"
    moved = run.root.parent / "lora-step-models"
    shutil.move(step_models, moved)  # only the resumable checkpoint step-6 is left
    try:
        out = tmp_path / "merged-from-checkpoint"
        result = export_model(run.root, out, checkpoint=6, merge_lora=True)
        assert result.source == "train/checkpoints/step-6"
        final = weights(run.root / "train" / "final")
        assert set(weights(out)) == set(final)
        assert all(torch.equal(v, final[k]) for k, v in weights(out).items())
    finally:
        shutil.move(moved, step_models)


def test_lora_saved_without_merging_is_merged_on_export(tiny_model_dir, root, tmp_path):
    _, run = trained(tiny_model_dir, root, "lora-adapter", n_problems=2, finetuning="lora",
                     lora_rank=4, lora_merge_on_save=False)
    assert not (run.root / "train" / "final" / "config.json").exists()
    out = tmp_path / "merged"
    export_model(run.root, out, merge_lora=True, dtype="fp32")
    assert dtypes(out) == {"torch.float32"}
    assert logits(out).shape[-1] > 0


# ---------------------------------------------------------------------------- refusals
def test_refusals_are_one_clear_message(full_run, root, tmp_path, capsys):
    _, run = full_run
    full = str(run.root)
    cases = [
        ([str(root / "missing"), "--out", str(tmp_path / "a")], "no such run directory"),
        ([full, "--out", str(tmp_path / "b"), "--checkpoint", "5"],
         "has no step-5 (it has: models: step-2, step-4, step-6; resumable checkpoints: "
         "step-6)"),
        ([full, "--out", str(run.root / "export")], "inside the run directory"),
        ([full, "--out", str(tmp_path / "c"), "--merge-lora"], "finetuning: full, not LoRA"),
        ([full, "--out", str(tmp_path / "d"), "--push-to-hub", "no-slash"],
         "not a repository id"),
    ]
    for argv, expected in cases:
        assert cli_main(["export", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err
    assert not (tmp_path / "b").exists() and not (run.root / "export").exists()


def test_a_non_empty_output_needs_force_which_replaces_only_a_marked_export(full_run,
                                                                            tmp_path):
    _, run = full_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("{}")  # looks like a model, but no export wrote it
    with pytest.raises(UserError, match="not empty"):
        plan_export(run.root, out)
    with pytest.raises(UserError, match=r"no \.o1pruner-export\.json in it.*delete this one "
                       "yourself"):
        plan_export(run.root, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "notes.txt"]
    new = tmp_path / "new"
    export_model(run.root, new, dtype="fp32")
    marker = read_json(new / MARKER)
    assert marker["run"] == str(run.root) and marker["source"] == "train/final"
    with pytest.raises(UserError, match="--force"):
        export_model(run.root, new)
    export_model(run.root, new, force=True)  # an earlier export: replaced
    assert dtypes(new) == {"torch.bfloat16"} and (new / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]  # no leftovers


def _fake_run(folder: Path) -> Path:
    """A run directory holding a trained model and a file of its owner's: train/final."""
    final = folder / "train" / "final"
    final.mkdir(parents=True)
    (folder / "spec.yaml").write_text("run: {name: other}\n")
    (folder / "job.json").write_text('{"state": "done"}')
    (final / "config.json").write_text("{}")
    (final / "notes.txt").write_text("keep me")
    return final


def test_force_never_writes_into_or_over_another_run(full_run, root, tmp_path, capsys):
    _, run = full_run
    beside = _fake_run(root / "other-run")  # a run under the same output root
    elsewhere = _fake_run(tmp_path / "elsewhere" / "run-b")  # a run anywhere else
    try:
        for out, expected in [(beside, "inside the run directory"),
                              (elsewhere, "inside the run directory"),
                              (beside.parent, "inside the run directory"),
                              (root, "holds the run directory"),
                              (tmp_path / "elsewhere" / "run-b", "is the run directory")]:
            with pytest.raises(UserError, match=expected):
                plan_export(run.root, out, force=True)
        assert cli_main(["export", str(run.root), "--out", str(beside), "--force"]) == 2
        err = capsys.readouterr().err
        assert "inside the run directory" in err and "Traceback" not in err, err
        for final in (beside, elsewhere):
            assert (final / "notes.txt").read_text() == "keep me"
            assert (final / "config.json").read_text() == "{}"
    finally:
        shutil.rmtree(root / "other-run")


def test_force_never_replaces_the_base_model_or_a_folder_the_spec_uses(
        full_run, tiny_model_dir, tmp_path):
    spec, run = full_run
    before = sorted(p.name for p in tiny_model_dir.iterdir())
    with pytest.raises(UserError, match="is the base model folder"):
        plan_export(run.root, tiny_model_dir, force=True)
    with pytest.raises(UserError, match="inside the base model folder"):
        plan_export(run.root, tiny_model_dir / "exported", force=True)
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == before
    data = tmp_path / "data"  # a copy of the run whose spec names a data folder
    data.mkdir()
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(run.root, copy)
    save_spec(spec.model_copy(update={"data": spec.data.model_copy(
        update={"local_dir": str(data)})}), copy / "spec.yaml")
    with pytest.raises(UserError, match=r"inside the data folder \(data.local_dir\)"):
        plan_export(copy, data / "exported", force=True)


def _export_cli(run, out, env):
    return subprocess.run([sys.executable, "-m", "o1pruner.cli", "export", str(run.root),
                           "--out", str(out), "--push-to-hub", "someone/tiny-o1pruner"],
                          cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("env,failure", [
    ({"HF_HUB_OFFLINE": "1"}, "OfflineModeIsEnabled"),
    ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_test"},
     "ConnectError")])
def test_a_push_without_the_hub_fails_with_one_message(full_run, tmp_path, env, failure):
    _, run = full_run
    out = tmp_path / "pushed"
    proc = _export_cli(run, out, env)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --push-to-hub someone/tiny-o1pruner: create_repo failed")
    assert failure in last and f"The export itself is complete in {out}" in last
    assert (out / "config.json").exists() and (out / "README.md").exists()


@pytest.mark.slow
def test_vllm_loads_the_exported_model(full_run, tmp_path):
    pytest.importorskip("vllm")
    from o1pruner.sampling.engines import set_vllm_cpu_env, vllm_support

    _, run = full_run
    out = tmp_path / "for-vllm"
    export_model(run.root, out)
    ok, why = vllm_support(str(out))
    if not ok:
        pytest.skip(why)
    set_vllm_cpu_env()
    code = ("import sys; from vllm import LLM, SamplingParams; "
            "llm = LLM(model=sys.argv[1], dtype='bfloat16', max_model_len=256, "
            "enforce_eager=True); "
            "out = llm.generate(['Mia has 3 apples'], SamplingParams(max_tokens=4, "
            "temperature=0)); print('TOKENS', len(out[0].outputs[0].token_ids))")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^TOKENS [1-4]$", proc.stdout, re.M), proc.stdout[-2000:]


@pytest.mark.slow
def test_two_processes_under_zero3_save_step_models_and_export_their_checkpoint(
        tiny_model_dir, tmp_path):
    # every rank gathers its shards for each step model; the resumable checkpoint is a
    # DeepSpeed one (fp32 weights in the optimizer partitions), exported via zero_to_fp32
    spec = make_spec(tiny_model_dir, tmp_path, name="z3", train={
        "deepspeed_stage": 3, "devices": 2, "precision": "fp32", "finetuning": "lora",
        "lora_rank": 4, "save_model_steps": 1, "keep_last_checkpoint": True})
    write_presample(run_dir_for(spec).root, load_tokenizer(spec.model, str(tiny_model_dir)))
    save_spec(spec, tmp_path / "z3.yaml")
    proc = subprocess.run([sys.executable, "-m", "o1pruner.cli", "train",
                           str(tmp_path / "z3.yaml")], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dir_for(spec)
    models = run.root / "train" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["step-1", "step-2", "step-3"]
    assert (models / "step-1" / "adapter" / "adapter_config.json").exists()
    assert not torch.equal(weights(models / "step-1")["model.layers.0.self_attn.q_proj.weight"],
                           weights(models / "step-3")["model.layers.0.self_attn.q_proj.weight"])
    assert (run.root / "train" / "checkpoints" / "step-3" / "pytorch_model").is_dir()
    out = tmp_path / "from-deepspeed"
    export_model(run.root, out, checkpoint=3, merge_lora=True)
    final = weights(run.root / "train" / "final")
    assert set(weights(out)) == set(final)
    assert all(torch.allclose(v, final[k], atol=1e-6) for k, v in weights(out).items())

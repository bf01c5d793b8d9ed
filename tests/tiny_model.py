"""A tiny real causal LM for tests: a byte-level BPE tokenizer trained here, with a ChatML
chat template, and a randomly initialised Llama built from a config. No hub access."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

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
                     vocab: int = 400, seed: int = 0) -> Path:
    """Write a tokenizer and a random Llama to `path` (Hugging Face format); return path."""
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
                                  eos_token="<|im_end|>", pad_token="<|pad|>")
    tok.chat_template = CHAT_TEMPLATE
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

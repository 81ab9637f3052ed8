"""A tiny, deterministic transformers causal LM built from scratch in about a second, for tests.

No tiny model or tokenizer ships offline with transformers or TRL (their tests download from the hub),
so tests build one: a byte-level BPE tokenizer trained on an in-code corpus of instruction-like
sentences, and a randomly initialised 2-layer Llama (about 100K parameters). It is a real model:
it loads with ``AutoModelForCausalLM`` / ``AutoTokenizer``, generates, serves and trains; its outputs
are gibberish until trained. Same arguments, same files: the corpus, the BPE and the init are seeded.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Each message is "<|role|>\ncontent<eos>\n"; the assistant's content and <eos> sit inside
# {% generation %} so that TRL's assistant-only loss (return_assistant_tokens_mask) works with it.
# Newlines after block tags are written as {{ '\n' }}: transformers renders with trim_blocks=True,
# which would swallow a literal one.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>\n{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}{{ '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_VERBS = ["Write", "Explain", "List", "Describe", "Summarize", "Translate", "Classify", "Rewrite", "Suggest", "Compare"]
_OBJECTS = [
    "a short poem about the sea",
    "how photosynthesis works",
    "three tips for staying healthy",
    "the main idea of the paragraph",
    "the sentence into French",
    "the review as positive or negative",
    "the email in a polite tone",
    "a name for a new coffee shop",
    "cats and dogs as pets",
    "the steps to bake bread",
    "a recipe that uses rice and beans",
    "the difference between weather and climate",
]
_SUFFIXES = ["", " in simple terms", " for a child", " in one sentence", " with an example", " using a list"]
_OUTPUTS = [
    "Sure, here is the answer.",
    "The answer is 42.",
    "First, mix the flour and water. Then, let it rest.",
    "Positive.",
    "Bonjour, comment allez-vous ?",
    "Plants use light to turn water and air into sugar.",
]


def tiny_corpus(size: int = 400, seed: int = 0) -> list[str]:
    """Deterministic English-ish instruction/answer lines, numbered lists included."""
    rng = random.Random(seed)
    lines = []
    combos = list(itertools.product(_VERBS, _OBJECTS, _SUFFIXES))
    for index in range(size):
        verb, obj, suffix = combos[rng.randrange(len(combos))]
        instruction = f"{verb} {obj}{suffix}."
        if index % 3 == 0:
            lines.append(f"{index % 9 + 1}. Instruction: {instruction}")
        elif index % 3 == 1:
            lines.append(f"Instruction: {instruction}\nOutput: {rng.choice(_OUTPUTS)}")
        else:
            lines.append(f"Task {index}: {instruction} Answer: {rng.choice(_OUTPUTS)}")
    return lines


def build_tiny_model(path: Path, *, chat_template: bool = True, vocab_size: int = 400, seed: int = 0) -> Path:
    """Write a tiny Llama model and its tokenizer to ``path`` (created if needed) and return ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte encodes: no unknown tokens
        show_progress=False,
    )
    bpe.train_from_iterator(tiny_corpus(), trainer=trainer)
    # Plain encoding starts with <bos> like Llama/Gemma; chat templates write it themselves.
    bos_id = bpe.token_to_id(BOS)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=2048,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

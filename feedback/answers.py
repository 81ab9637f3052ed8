"""The student's own answers to prompts: greedy decoding in the frame it was trained in.

Used for held-out evaluation beside the loss: a student can lower its loss on reference answers while still
writing poor text, so its greedy answers are scored against the references too (by the caller, e.g. ROUGE-L).
Greedy decoding makes the answers a function of the weights alone, so both methods are measured the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from feedback.config import TrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def greedy_answers(
    student: str,
    adapter_path: str | Path | None,
    prompts: dict[int, str],
    config: TrainConfig,
    max_new_tokens: int = 64,
) -> dict[int, str]:
    """The student's greedy answer to each prompt, by id; ``adapter_path`` None answers with the bare student.

    Prompts are framed as in training (the chat template when the student has one and ``config.chat`` allows,
    else the plain ``Instruction/Response`` frame), left-padded in batches of ``config.eval_batch_size``.
    Decoding stops at the tokenizer's EOS or after ``max_new_tokens``.
    """
    import torch

    from feedback import _hf

    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    if not prompts:
        return {}
    runtime = _hf.resolve_runtime(config)
    tokenizer = _hf.load_tokenizer(student)
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    chat = _hf.uses_chat(config, tokenizer)
    model = _hf.load_frozen(student, config, runtime, adapter_path)
    device = _hf.to_inference(model, runtime)
    ids = list(prompts)
    texts = [_framed(tokenizer, prompts[i], chat) for i in ids]
    answers: dict[int, str] = {}
    autocast = torch.autocast(device_type=runtime.device, dtype=torch.bfloat16, enabled=runtime.bf16)
    size = config.eval_batch_size
    with torch.inference_mode(), autocast:
        for start in range(0, len(texts), size):
            # A chat template writes its own special tokens; a plain frame gets the tokenizer's (e.g. <bos>).
            batch = tokenizer(
                texts[start : start + size], return_tensors="pt", padding=True, add_special_tokens=not chat
            )
            output = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            width = batch["input_ids"].shape[1]
            for row, text in enumerate(tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)):
                answers[ids[start + row]] = text.strip()
    return answers


def _framed(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: bool) -> str:
    from feedback._hf import PLAIN_PROMPT

    if not chat:
        return PLAIN_PROMPT.format(prompt=prompt)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return str(rendered)

"""feedback.greedy_answers on the tiny models: the same tokens as a hand-written greedy loop, independent of
batching and padding, in the frame the student was trained in, and moved by a trained adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from feedback import TrainConfig, TrainExample, greedy_answers, train_round
from feedback._hf import PLAIN_PROMPT

torch = pytest.importorskip("torch")

PROMPTS = {
    3: "Name a fruit.",
    7: "Explain the steps to bake bread in a very long and detailed way, please.",
    9: "Hi",
}


def config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        per_device_batch_size=4, max_length=96, lora_dropout=0.0, precision="float32", device="cpu"
    )
    return TrainConfig(**{**base, **overrides})


def hand_greedy(model_dir: Path, text: str, new_tokens: int, special: bool) -> str:
    """Argmax one token at a time from the full sequence: no padding, no cache, no generate()."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tokenizer(text, add_special_tokens=special)["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            token = int(logits.argmax())
            if token == tokenizer.eos_token_id:
                break
            out.append(token)
    return str(tokenizer.decode(out, skip_special_tokens=True)).strip()


@pytest.mark.slow
def test_answers_are_the_greedy_continuation_of_the_chat_frame(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    answers = greedy_answers(str(tiny_model_dir), None, PROMPTS, config(eval_batch_size=3), max_new_tokens=12)
    assert set(answers) == set(PROMPTS)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for key, prompt in PROMPTS.items():
        framed = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        assert answers[key] == hand_greedy(tiny_model_dir, str(framed), 12, special=False), key


@pytest.mark.slow
def test_batching_and_left_padding_do_not_change_the_answers(tiny_model_dir: Path) -> None:
    together = greedy_answers(str(tiny_model_dir), None, PROMPTS, config(eval_batch_size=3), max_new_tokens=10)
    alone = greedy_answers(str(tiny_model_dir), None, PROMPTS, config(eval_batch_size=1), max_new_tokens=10)
    assert together == alone


@pytest.mark.slow
def test_plain_frame_for_a_student_without_chat_template(tiny_model_dir_no_template: Path) -> None:
    answers = greedy_answers(str(tiny_model_dir_no_template), None, {1: "Name a fruit."}, config(), max_new_tokens=8)
    framed = PLAIN_PROMPT.format(prompt="Name a fruit.")
    assert answers[1] == hand_greedy(tiny_model_dir_no_template, framed, 8, special=True)


@pytest.mark.slow
def test_a_trained_adapter_changes_the_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    target = "The answer is forty two."
    examples = [TrainExample(id=i, prompt=PROMPTS[3], completion=target) for i in range(8)]
    cfg = config(lora=False, learning_rate=1e-2)  # full fine-tuning: the tiny model learns in a few steps
    result = train_round(str(tiny_model_dir), examples, [[0, 1, 2, 3], [4, 5, 6, 7]] * 4, cfg, tmp_path)
    before = greedy_answers(str(tiny_model_dir), None, {3: PROMPTS[3]}, cfg, max_new_tokens=8)
    after = greedy_answers(str(tiny_model_dir), result.adapter_path, {3: PROMPTS[3]}, cfg, max_new_tokens=8)
    assert after != before
    assert "answer" in after[3] and "answer" not in before[3]  # eight steps on one answer: its words come out


def test_rejects_a_non_positive_token_limit(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_answers(str(tiny_model_dir), None, PROMPTS, config(), max_new_tokens=0)

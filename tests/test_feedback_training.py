"""feedback.train_round and feedback.per_example_loss on the tiny chat model (CPU, fp32, no LoRA dropout)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from feedback import (
    STEPS_FILE,
    RoundResult,
    TrainConfig,
    TrainExample,
    per_example_loss,
    read_steps_jsonl,
    train_round,
)

torch = pytest.importorskip("torch")

TOO_LONG = 99
EXAMPLES = [
    TrainExample(id=10 + i, prompt=f"{verb} the steps to bake bread {i}.", completion=answer)
    for i, (verb, answer) in enumerate(
        [
            ("Explain", "First, mix the flour and water."),
            ("List", "The answer is 42."),
            ("Describe", "Positive."),
            ("Summarize", "Plants use light to turn water and air into sugar."),
            ("Rewrite", "Sure, here is the answer. Then, let it rest."),
            ("Suggest", "Bonjour, comment allez-vous ?"),
            ("Compare", "Cats and dogs."),
            ("Classify", "Negative."),
            ("Translate", "Pain."),
            ("Write", "A short poem about the sea."),
            ("Explain", "Weather is today, climate is decades."),
            ("List", "Rice, beans, salt."),
        ]
    )
] + [TrainExample(id=TOO_LONG, prompt="Write a long story.", completion="The answer is 42. " * 80)]
ALL_IDS = [ex.id for ex in EXAMPLES]
BATCHES = [[10, 11, 12], [13, 14], [15, 16, 17, 18], [19, 20, 21]]


def config(**overrides: Any) -> TrainConfig:
    # fp32 and no dropout make every number reproducible; a high rate makes one round move the weights.
    base: dict[str, Any] = dict(
        per_device_batch_size=4, max_length=96, lora_dropout=0.0, precision="float32", device="cpu", learning_rate=1e-2
    )
    return TrainConfig(**{**base, **overrides})


def encode(tokenizer: Any, example: TrainExample) -> tuple[list[int], list[int]]:
    """Independent tokenisation: chat template, labels only on what follows the generation prompt."""
    user = [{"role": "user", "content": example.prompt}]
    prompt = tokenizer.apply_chat_template(user, tokenize=True, add_generation_prompt=True)["input_ids"]
    full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": example.completion}], tokenize=True)[
        "input_ids"
    ]
    assert full[: len(prompt)] == prompt
    return full, [-100] * len(prompt) + full[len(prompt) :]


def padded(tokenizer: Any, examples: list[TrainExample]) -> tuple[Any, Any, Any]:
    encoded = [encode(tokenizer, ex) for ex in examples]
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    labels = torch.full((len(encoded), width), -100)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return input_ids, labels, mask


def by_id(*ids: int) -> list[TrainExample]:
    table = {ex.id: ex for ex in EXAMPLES}
    return [table[i] for i in ids]


def adapter_tensors(path: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def round1(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RoundResult:
    out = tmp_path_factory.mktemp("round1")
    return train_round(str(tiny_model_dir), EXAMPLES, BATCHES, config(), out)


@pytest.fixture(scope="module")
def round2(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, round1: RoundResult
) -> tuple[RoundResult, dict[str, Any]]:
    """Continue round 1's adapter with accumulation over 2 batches and clipping far below the gradient norm."""
    import feedback._hf as hf

    original = hf.load_student
    start: dict[str, Any] = {}

    def spy(*args: Any, **kwargs: Any) -> Any:
        model = original(*args, **kwargs)
        start.update({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        return model

    out = tmp_path_factory.mktemp("round2")
    cfg = config(gradient_accumulation_steps=2, max_grad_norm=1e-3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hf, "load_student", spy)
        result = train_round(str(tiny_model_dir), EXAMPLES, BATCHES, cfg, out, adapter_dir=Path(round1.adapter_path))
    return result, start


@pytest.mark.slow
def test_round_trains_in_composed_order_and_records_every_step(round1: RoundResult) -> None:
    assert [s.step for s in round1.steps] == [1, 2, 3, 4]
    assert [s.ids for s in round1.steps] == BATCHES
    assert round1.dropped_ids == [TOO_LONG]  # too long, though in no batch: reported all the same
    assert round1.device == "cpu"
    assert all(math.isfinite(s.grad_norm) and s.grad_norm > 0 for s in round1.steps)
    assert all(s.learning_rate == pytest.approx(1e-2) for s in round1.steps)
    assert round1.train_loss == pytest.approx(sum(s.loss for s in round1.steps) / 4)
    written = read_steps_jsonl(Path(round1.adapter_path).parent / STEPS_FILE)
    assert written == round1.steps


@pytest.mark.slow
def test_round_changes_the_lora_weights(round1: RoundResult) -> None:
    tensors = adapter_tensors(round1.adapter_path)
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b, "the adapter holds no LoRA B matrices"
    # peft initialises every B at zero: any non-zero B was written by the optimizer.
    assert all(t.abs().sum() > 0 for t in lora_b)


@pytest.mark.slow
def test_second_round_starts_from_the_first_rounds_adapter(
    round1: RoundResult, round2: tuple[RoundResult, dict[str, Any]]
) -> None:
    result, start = round2
    saved = adapter_tensors(round1.adapter_path)
    assert len(start) == len(saved) > 0
    for name, tensor in start.items():
        assert torch.equal(tensor, saved[name.replace(".default", "")]), name
    after = adapter_tensors(result.adapter_path)
    assert any(not torch.equal(after[name], saved[name]) for name in saved)


@pytest.mark.slow
def test_accumulated_steps_span_consecutive_composed_batches(round2: tuple[RoundResult, dict[str, Any]]) -> None:
    result, _ = round2
    assert [s.ids for s in result.steps] == [BATCHES[0] + BATCHES[1], BATCHES[2] + BATCHES[3]]


@pytest.mark.slow
def test_recorded_grad_norm_is_the_pre_clipping_norm(
    tiny_model_dir: Path, round1: RoundResult, round2: tuple[RoundResult, dict[str, Any]]
) -> None:
    """Recompute step 1 of round 2 by hand: round 1's adapter, the same two micro-batches, token-mean CE."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, _ = round2
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, round1.adapter_path, is_trainable=True)
    model.train()
    # One padded batch holding both micro-batches gives the same summed loss and token count as accumulating them.
    input_ids, labels, mask = padded(tokenizer, by_id(*BATCHES[0], *BATCHES[1]))
    logits = model(input_ids=input_ids, attention_mask=mask).logits
    targets = labels[:, 1:]
    loss_sum = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="sum"
    )
    loss = loss_sum / (targets != -100).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()

    step = result.steps[0]
    assert step.grad_norm > 1e-3 * 10  # clipping to 1e-3 did happen, and the record is not the clipped norm
    assert step.grad_norm == pytest.approx(norm, rel=1e-4)
    assert step.loss == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.slow
def test_too_long_example_is_dropped_and_ids_stay_aligned(tiny_model_dir: Path, tmp_path: Path) -> None:
    batches = [[10, TOO_LONG, 11], [TOO_LONG], [12]]
    result = train_round(str(tiny_model_dir), EXAMPLES, batches, config(), tmp_path)
    assert result.dropped_ids == [TOO_LONG]
    assert [s.ids for s in result.steps] == [[10, 11], [12]]  # the emptied batch is skipped, not trained
    lines = (tmp_path / STEPS_FILE).read_text().splitlines()
    assert [json.loads(line)["ids"] for line in lines] == [[10, 11], [12]]


@pytest.mark.slow
def test_truncate_mode_keeps_the_long_example(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = train_round(str(tiny_model_dir), EXAMPLES, [[10, TOO_LONG], [11]], config(too_long="truncate"), tmp_path)
    assert result.dropped_ids == []
    assert [s.ids for s in result.steps] == [[10, TOO_LONG], [11]]


def test_batches_are_validated(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="per_device_batch_size"):
        train_round(str(tiny_model_dir), EXAMPLES, [[10, 11, 12, 13, 14]], config(), tmp_path)
    with pytest.raises(ValueError, match="not in examples"):
        train_round(str(tiny_model_dir), EXAMPLES, [[10, 12345]], config(), tmp_path)


@pytest.mark.slow
def test_per_example_loss_matches_the_models_own_loss(tiny_model_dir: Path, round1: RoundResult) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dropped: list[int] = []
    # Shuffled order and a batch size that splits the examples unevenly: results must still map by id.
    shuffled = list(reversed(EXAMPLES))
    losses = per_example_loss(
        str(tiny_model_dir), round1.adapter_path, shuffled, config(eval_batch_size=5), dropped=dropped
    )
    assert dropped == [TOO_LONG]
    assert sorted(losses) == sorted(i for i in ALL_IDS if i != TOO_LONG)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, round1.adapter_path).eval()
    with torch.no_grad():
        for example in EXAMPLES[:-1]:
            input_ids, labels, _ = padded(tokenizer, [example])
            expected = model(input_ids=input_ids, labels=labels).loss.item()
            assert losses[example.id] == pytest.approx(expected, rel=1e-5), example.id


@pytest.mark.slow
def test_scoring_cuts_passes_by_logits_size_and_scores_the_same(
    tiny_model_dir: Path, round1: RoundResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import feedback.scoring as scoring

    # Plain numbers first: rows x longest x vocabulary stays under the cap, a lone long row still passes.
    monkeypatch.setattr(scoring, "LOGITS_PER_PASS", 1000)
    assert scoring._chunks([10, 10, 10, 40, 5, 5], rows_per_pass=8, vocabulary=10) == [(0, 3), (3, 5), (5, 6)]
    assert scoring._chunks([200], rows_per_pass=8, vocabulary=10) == [(0, 1)]
    assert scoring._chunks([1] * 5, rows_per_pass=2, vocabulary=10) == [(0, 2), (2, 4), (4, 5)]
    monkeypatch.undo()
    together = per_example_loss(str(tiny_model_dir), round1.adapter_path, EXAMPLES, config(eval_batch_size=8))
    monkeypatch.setattr(scoring, "LOGITS_PER_PASS", 1)  # every pass one row
    alone = per_example_loss(str(tiny_model_dir), round1.adapter_path, EXAMPLES, config(eval_batch_size=8))
    assert sorted(alone) == sorted(together)
    for task, loss in together.items():
        assert alone[task] == pytest.approx(loss, rel=1e-5), task


@pytest.mark.slow
def test_base_model_without_chat_template_trains_on_text(tiny_model_dir_no_template: Path, tmp_path: Path) -> None:
    examples = [
        TrainExample(id=i, prompt=f"Instruction: Write a poem {i}.\nOutput: ", completion="The sea.") for i in range(4)
    ]
    result = train_round(str(tiny_model_dir_no_template), examples, [[3, 1], [0, 2]], config(), tmp_path)
    assert [s.ids for s in result.steps] == [[3, 1], [0, 2]]
    losses = per_example_loss(str(tiny_model_dir_no_template), result.adapter_path, examples, config())
    assert sorted(losses) == [0, 1, 2, 3]


@pytest.mark.slow
def test_last_accumulated_step_may_span_fewer_batches(tiny_model_dir: Path, tmp_path: Path) -> None:
    batches = [[21, 10], [15], [12, 19, 11]]
    result = train_round(str(tiny_model_dir), EXAMPLES, batches, config(gradient_accumulation_steps=2), tmp_path)
    assert [s.ids for s in result.steps] == [[21, 10, 15], [12, 19, 11]]


@pytest.mark.slow
def test_full_fine_tuning_saves_and_continues_the_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = config(lora=False, learning_rate=1e-3)
    first = train_round(str(tiny_model_dir), EXAMPLES, BATCHES[:2], cfg, tmp_path / "a")
    assert Path(first.adapter_path).name == "model"
    second = train_round(
        str(tiny_model_dir), EXAMPLES, BATCHES[2:], cfg, tmp_path / "b", adapter_dir=Path(first.adapter_path)
    )
    assert [s.ids for s in second.steps] == BATCHES[2:]
    weights = [load_file(str(Path(p) / "model.safetensors")) for p in (tiny_model_dir, first.adapter_path)]
    weights.append(load_file(str(Path(second.adapter_path) / "model.safetensors")))
    name = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(weights[0][name], weights[1][name])
    assert not torch.equal(weights[1][name], weights[2][name])

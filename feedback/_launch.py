"""A training round in several processes: :func:`train_round` under torchrun, or under ``accelerate launch`` with
the user's accelerate config (FSDP, DeepSpeed).

The caller's process writes the round's inputs to ``out_dir/launch.json`` and starts the launcher, which runs
this module's ``main`` once per rank (``python -m feedback._launch SPEC``). Every rank calls the same
:func:`feedback.training.train_round`; what stays exact whatever the number of processes:

- each optimizer step's global batch is the composed batch (every rank takes its slice of it,
  :class:`feedback._trainer.ComposedBatches`), so the steps hold the same task ids as with one process;
- the recorded gradient norm is that of the all-reduced gradient, and the loss weighs every supervised token of
  the global batch alike (``average_tokens_across_devices``), however unevenly the rows fall to the ranks;
- only the main process writes the adapter, ``steps.jsonl`` and ``launch-result.json``; the caller reads the
  result back from that file.

Without a config the launcher is ``torch.distributed.run`` (one node, N processes: gloo on CPU, NCCL on GPUs,
one device per process). A launch that fails or is killed leaves no result, and the caller raises: the round's
``done`` marker is never written, so a rerun trains the round again from the previous adapter, as after a killed
single-process round. The launcher is told to die with the caller (Linux ``PR_SET_PDEATHSIG``), so a killed run
leaves no rank training into the round directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from feedback.config import TrainConfig
from feedback.records import RoundResult, TrainExample

SPEC_FILE = "launch.json"
RESULT_FILE = "launch-result.json"
LOG_FILE = "launch.log"


def launcher_command(processes: int, accelerate_config: str | None, spec: Path) -> list[str]:
    """The command that runs ``processes`` ranks of this module on ``spec``."""
    entry = ["-m", "feedback._launch", str(spec)]
    if accelerate_config is not None:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config]
        return [*launch, "--num_processes", str(processes), *entry]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), *entry]


def _death_signal(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, sig)


def _die_with_parent() -> None:
    """Run in the launcher before it starts: SIGTERM it when the caller dies (torchrun then stops its ranks)."""
    parent = os.getppid()
    _death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the caller died before the request took effect: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def _die_with_launcher(spec_path: str) -> None:
    """Run first in every rank: SIGKILL it when its launcher dies. torchrun stops its ranks when it is terminated,
    but a launcher killed outright (or before it could pass a SIGTERM on: once seen in CI on a loaded machine) would
    leave them training into the round directory. A launcher that died before this ran left the rank to another
    parent, whose command line does not name this round's spec: then the rank stops at once."""
    _death_signal(signal.SIGKILL)
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        parent = ""
    if spec_path not in parent:
        os.kill(os.getpid(), signal.SIGKILL)


def launch_round(
    student: str,
    examples: list[TrainExample],
    batches: list[list[int]],
    config: TrainConfig,
    out_dir: Path,
    adapter_dir: Path | None,
    processes: int,
    accelerate_config: str | None = None,
) -> RoundResult:
    """Run :func:`feedback.training.train_round` in ``processes`` processes and return the main process's result.

    The launcher's output goes to ``out_dir/launch.log``; a failed launch raises with its tail.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec, result, log = out_dir / SPEC_FILE, out_dir / RESULT_FILE, out_dir / LOG_FILE
    result.unlink(missing_ok=True)  # a result left by an earlier launch must never be read as this one's
    body = {
        "student": student,
        "examples": [ex.model_dump() for ex in examples],
        "batches": batches,
        "config": config.model_dump(),
        "out_dir": str(out_dir),
        "adapter_dir": None if adapter_dir is None else str(adapter_dir),
    }
    spec.write_text(json.dumps(body), encoding="utf-8")
    command = launcher_command(processes, accelerate_config, spec)
    with log.open("w", encoding="utf-8") as handle:
        finished = subprocess.run(
            command,
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            check=False,
        )
    if finished.returncode != 0 or not result.is_file():
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise RuntimeError(
            f"the {processes}-process training round failed (exit code {finished.returncode}); its output is in "
            f"{log}, ending:\n{tail}"
        )
    return RoundResult.model_validate_json(result.read_text(encoding="utf-8"))


def main(spec_path: str) -> None:
    """One rank: train the round described in ``spec_path``; the main process writes the result file."""
    from feedback.training import train_round

    if sys.platform == "linux":
        _die_with_launcher(spec_path)
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out_dir = Path(spec["out_dir"])
    result = train_round(
        spec["student"],
        [TrainExample.model_validate(ex) for ex in spec["examples"]],
        spec["batches"],
        TrainConfig.model_validate(spec["config"]),
        out_dir,
        None if spec["adapter_dir"] is None else Path(spec["adapter_dir"]),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        # Written last and renamed into place: its presence means the adapter and steps.jsonl are complete.
        partial = out_dir / (RESULT_FILE + ".partial")
        partial.write_text(result.model_dump_json(), encoding="utf-8")
        partial.replace(out_dir / RESULT_FILE)


if __name__ == "__main__":
    main(sys.argv[1])

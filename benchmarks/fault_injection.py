"""Kill training at random moments and check that it always comes back exactly.

Usage:
    python benchmarks/fault_injection.py [--kills 24] [--seed 0] [--out FILE.json]

A tiny model (``ALPNet(backbone="tiny", feature_dim=8)``, 32 x 32 synthetic superpixel episodes
with the full augmentation, one torch thread) trains in a child process with checkpoints every
``--every`` steps. Every save writes its temporary file in two halves with a pause between them
(a slow disk), so a kill can land in the middle of a save. The parent kills the child with
SIGKILL, alternately

* at a random moment after training started (uniform in 0..``--window`` seconds), and
* during a save: at the k-th save the child announces (k random in 1..3), a random fraction of
  the pause after the first half was written;

then starts it again, ``--kills`` times, and lets the last child finish. After every kill it
checks that ``last.pt`` passes `fewshotseg.checkpoints.load_checkpoint` (its content hash
included) and is the newest checkpoint whose save had completed; after every restart, that the
child resumed from that step and that no temporary file of a dead process is left in the folder.
At the end the weights, optimiser state and step must equal, bit for bit, those of the same
training run once without interruption. The JSON summary has every kill's record.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------- the child


def build_trainer(folder: Path, iterations: int, every: int) -> Any:
    """The training both the killed runs and the reference run do (deterministic)."""
    import numpy as np
    import torch

    from fewshotseg import ALPNet, AugmentConfig, EpisodeSampler, TrainConfig, Trainer

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ids = np.arange(16).reshape(4, 4).repeat(8, 0).repeat(8, 1) + 1
    images, labels = [], []
    for _ in range(2):
        base = rng.random(17)[ids]
        images.append(np.stack([base + 0.05 * rng.standard_normal((32, 32)) for _ in range(3)]))
        labels.append(np.repeat(ids[None], 3, 0))
    sampler = EpisodeSampler(
        [im.astype(np.float32) for im in images], labels, image_size=32, min_foreground=16,
        augment=AugmentConfig(), seed=0,
    )  # fmt: skip
    config = TrainConfig(
        iterations=iterations, checkpoint_every=every, log_every=10**6, progress=False,
        lr=1e-2, lr_step=7, lr_gamma=0.9, checkpoint_dir=str(folder), seed=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return Trainer(ALPNet(backbone="tiny", feature_dim=8), sampler, config, device="cpu")


def child(folder: Path, iterations: int, every: int, pause: float) -> None:
    """Train in ``folder``, announcing on stdout: START, RESUMED n, SAVING n, SAVED n, DONE n."""
    import torch

    import fewshotseg.training as training

    real_save = torch.save

    def slow_save(obj: Any, f: Any) -> None:  # a slow disk: half, pause, the rest
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        with open(f, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            print(f"SAVING {obj.get('step')}", flush=True)
            time.sleep(pause)
            handle.write(data[len(data) // 2 :])

    torch.save = slow_save
    trainer = build_trainer(folder, iterations, every)
    real_load, real_trainer_save = trainer.load, trainer.save

    def load(path: Any) -> None:
        real_load(path)
        print(f"RESUMED {trainer.step}", flush=True)

    def save(path: Any) -> None:
        real_trainer_save(path)
        print(f"SAVED {trainer.step}", flush=True)

    trainer.load, trainer.save = load, save
    print(f"START {os.getpid()}", flush=True)
    training.Trainer.fit(trainer)
    print(f"DONE {trainer.step}", flush=True)


# -------------------------------------------------------------------------------- the parent


def _reader(stream: Any, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.strip())
    lines.put(None)


class _Forked:
    """A forked child (no interpreter start-up: for the quick test), like a Popen."""

    def __init__(self, folder: Path, iterations: int, every: int, pause: float) -> None:
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: announce on the pipe, never return into the caller
            code = 1
            try:
                os.close(read)
                sys.stdout = open(write, "w", buffering=1)  # noqa: SIM115
                child(folder, iterations, every, pause)
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self.stdout = open(read)  # noqa: SIM115
        self.returncode: int | None = None

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _start(
    folder: Path, iterations: int, every: int, pause: float, fork: bool
) -> tuple[Any, queue.Queue]:
    if fork:
        proc: Any = _Forked(folder, iterations, every, pause)
    else:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(folder), "--iterations", str(iterations),
             "--every", str(every), "--pause", str(pause)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    return proc, lines


def _next(lines: queue.Queue, timeout: float) -> str | None:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def _stale(folder: Path, pid: int) -> list[str]:
    return [p.name for p in folder.glob(".*.tmp") if not p.name.endswith(f".{pid}.tmp")]


def run(
    *, kills: int, folder: Path, iterations: int = 1500, every: int = 5, pause: float = 0.05,
    window: float = 1.5, seed: int = 0, fork: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Kill and restart ``kills`` times, finish, compare with an uninterrupted run.

    ``fork=True`` forks the children from this process instead of starting new interpreters
    (seconds faster each; what the quick test uses)."""
    import torch

    from fewshotseg.checkpoints import load_checkpoint

    rnd = random.Random(seed)
    runs, records = folder / "killed", []
    started = time.perf_counter()
    for k in range(kills + 1):
        last_kill = k == kills
        proc, lines = _start(runs, iterations, every, pause, fork)
        mode = "none" if last_kill else ("save" if k % 2 else "random")
        target_save, saves_seen = rnd.randint(1, 3), 0
        record: dict[str, Any] = {"kill": k, "mode": mode}
        last_saved, last_saving, resumed, t_start = None, None, None, None
        while True:
            timeout = 60.0
            if mode == "random" and t_start is not None:
                timeout = max(0.0, t_start + record["delay_s"] - time.perf_counter())
            line = _next(lines, timeout)
            if line is None:  # the child ended by itself
                break
            if line == "" and mode == "random" and t_start is not None:
                proc.kill()
                break
            if line == "":
                raise RuntimeError(f"the child said nothing for 60 s (kill {k})")
            word, _, value = line.partition(" ")
            if word == "START":
                record["pid"] = int(value)
            elif word == "RESUMED":
                resumed = int(value)
            elif word == "SAVING":
                last_saving = int(value)
                saves_seen += 1
                if mode == "save" and saves_seen == target_save:
                    time.sleep(rnd.random() * pause)
                    proc.kill()
                    record["killed_in_save_of_step"] = last_saving
                    break
            elif word == "SAVED":
                last_saved = int(value)
            if word in ("RESUMED", "SAVING", "SAVED") and t_start is None:
                # training has started (resumed, or first step done): the kill clock runs
                t_start = time.perf_counter()
                record["delay_s"] = round(rnd.uniform(0.0, window), 3)
                if word == "RESUMED":
                    record["stale_after_start"] = _stale(runs, record["pid"])
        proc.wait()
        if getattr(proc, "stdout", None) is not None:
            proc.stdout.close()
        record["resumed_from"] = resumed
        expected_resume = records[-1]["step_on_disk"] if records else None
        record["resume_ok"] = resumed == expected_resume
        record["temp_left_by_kill"] = sorted(p.name for p in runs.glob(".*.tmp"))
        if (runs / "last.pt").is_file():
            step = int(load_checkpoint(runs / "last.pt")["step"])  # hash verified here
        else:
            step = None
        record["step_on_disk"] = step
        # the newest completed save: the last SAVED one (or, without one in this run, the
        # checkpoint it resumed from), or the save in progress if its rename had happened
        newest = last_saved if last_saved is not None else expected_resume
        record["disk_ok"] = step in {newest, last_saving} if mode != "none" else (
            step == iterations
        )
        record["returncode"] = proc.returncode
        records.append(record)
    killed_seconds = time.perf_counter() - started

    t0 = time.perf_counter()
    reference = build_trainer(folder / "reference", iterations, every)
    reference.fit()
    reference_seconds = time.perf_counter() - t0
    final = load_checkpoint(runs / "last.pt")
    ref = load_checkpoint(folder / "reference" / "last.pt")
    same_model = all(torch.equal(final["model"][k], v) for k, v in ref["model"].items())
    same_optimizer = all(
        torch.equal(final["optimizer"]["state"][i]["momentum_buffer"], s["momentum_buffer"])
        for i, s in ref["optimizer"]["state"].items()
    )
    kill_records = records[:-1]
    summary = {
        "kills": kills,
        "kills_delivered": sum(r["returncode"] == -signal.SIGKILL for r in kill_records),
        "kills_during_save": sum("killed_in_save_of_step" in r for r in kill_records),
        "kills_leaving_a_temp_file": sum(bool(r["temp_left_by_kill"]) for r in kill_records),
        "resumes_from_last_complete_checkpoint": sum(r["resume_ok"] for r in records[1:]),
        "resumes": len(records) - 1,
        "checkpoint_on_disk_is_last_completed_save": sum(r["disk_ok"] for r in records),
        "stale_temp_files_after_restart": sum(
            len(r.get("stale_after_start", [])) for r in records
        ),
        "final_step": int(final["step"]),
        "final_weights_equal_uninterrupted": bool(same_model),
        "final_optimizer_equal_uninterrupted": bool(same_optimizer),
        "seconds_with_kills": round(killed_seconds, 1),
        "seconds_uninterrupted_in_process": round(reference_seconds, 1),
        "iterations": iterations,
        "checkpoint_every": every,
        "records": records,
    }
    return summary


def passed(summary: dict[str, Any]) -> bool:
    """Every check of `run` held."""
    return (
        summary["kills_delivered"] == summary["kills"]
        and summary["resumes_from_last_complete_checkpoint"] == summary["resumes"]
        and summary["checkpoint_on_disk_is_last_completed_save"] == len(summary["records"])
        and summary["stale_temp_files_after_restart"] == 0
        and summary["final_weights_equal_uninterrupted"]
        and summary["final_optimizer_equal_uninterrupted"]
        and summary["final_step"] == summary["iterations"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--pause", type=float, default=0.05)
    parser.add_argument("--window", type=float, default=1.5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.iterations, args.every, args.pause)
        return 0
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="fault_injection_") as tmp:
        summary = run(kills=args.kills, folder=Path(tmp), iterations=args.iterations,
                      every=args.every, pause=args.pause, window=args.window, seed=args.seed)
    text = json.dumps(summary, indent=1)
    if args.out:
        args.out.write_text(text)
    brief = {k: v for k, v in summary.items() if k != "records"}
    print(json.dumps(brief, indent=1))
    print("PASS" if passed(summary) else "FAIL")
    return 0 if passed(summary) else 1


if __name__ == "__main__":
    sys.exit(main())

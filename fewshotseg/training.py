"""Training: the optimisation loop over the paper's objective (`fewshotseg.losses`), resumable.

Episode ``t * batch_size + j`` of the sampler's stream feeds step ``t``, so the data a step sees
is a pure function of the step number: a resumed run sees exactly the episodes an uninterrupted
one would, with any number of DataLoader workers. The run's settings are a `TrainConfig`
(`fewshotseg.training_config`, re-exported here).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fewshotseg._stop_signals import ignore_stop_signals, stop_requests
from fewshotseg._version import __version__
from fewshotseg.checkpoints import (
    RunFolderLock,
    clean_stale_temp_files,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from fewshotseg.losses import LossModule, episode_loss
from fewshotseg.models.alpnet import ALPNet
from fewshotseg.precision import autocast, autocast_dtype, prefers_channels_last
from fewshotseg.training_config import TrainConfig

__all__ = [
    "TrainConfig",
    "TrainHistory",
    "Trainer",
    "TrainingInterrupted",
    "episode_loss",
    "close_distributed",
    "init_distributed",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
BEST_NAME = "best.pt"
#: The run folder's training curve: one row per log line (`fewshotseg.viz.save_training_curve`).
METRICS_NAME = "metrics.csv"
METRICS_COLUMNS = ("step", "loss", "seg_loss", "align_loss", "lr", "episodes_per_s", "seconds")


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"12 min"``, ``"1.5 h"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class TrainHistory:
    """What `Trainer.fit` measured, one entry per log line (lists of Python floats).

    ``loss``, ``seg_loss`` and ``align_loss`` are means over the steps since the previous log
    line (non-finite steps left out), so ``loss = seg_loss + align_weight * align_loss`` as for
    each step; ``rate`` is steps per second over that window and ``lr`` the learning rate at
    the logged step. ``validation`` holds ``(step, score)`` pairs, ``skipped_steps`` counts
    updates skipped for a non-finite loss, ``seconds`` the time spent in ``fit``.

    Example:
        >>> h = TrainHistory(steps=[100], loss=[0.75], seg_loss=[0.5], align_loss=[0.25])
        >>> h.loss[0] == h.seg_loss[0] + 1.0 * h.align_loss[0], h.skipped_steps
        (True, 0)
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seg_loss: list[float] = field(default_factory=list)
    align_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)
    skipped_steps: int = 0
    seconds: float = 0.0


class TrainingInterrupted(KeyboardInterrupt):
    """`Trainer.fit` stopped on SIGINT or SIGTERM after saving a checkpoint at a step boundary.

    A subclass of `KeyboardInterrupt`, so code that already handles Ctrl-C handles it too.
    ``signal_number`` says which signal stopped the run and ``step`` the step that was saved.

    Example:
        >>> stop = TrainingInterrupted(signal.SIGTERM, step=120)
        >>> isinstance(stop, KeyboardInterrupt), stop.step, str(stop)
        (True, 120, 'training stopped by SIGTERM at step 120')
    """

    def __init__(self, signal_number: int, step: int) -> None:
        super().__init__(f"training stopped by {signal.Signals(signal_number).name} at step {step}")
        self.signal_number = signal_number
        self.step = step


class _EpisodeRange(torch.utils.data.Dataset):
    """Map-style view of the sampler: item i is episode i of this rank's stream."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, index: int) -> Any:
        return self.sampler.episode(index)


class _IndexRange(torch.utils.data.Sampler[int]):
    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def init_distributed() -> torch.device:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses NCCL with one GPU per local rank when CUDA is available, else gloo on the CPU.
    Returns the device this process should train on. Without ``torchrun`` (no
    ``WORLD_SIZE`` > 1) it does nothing and returns the default device.

    Example:
        >>> device = init_distributed()  # not under torchrun: no process group
        >>> torch.distributed.is_initialized(), device.type in ("cpu", "cuda")
        (False, True)
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def close_distributed() -> None:
    """Leave the process group that ``init_distributed`` joined; nothing to do without one.

    Drop every ``Trainer`` first (``del trainer``): its DistributedDataParallel wrapper holds
    the group, which would otherwise be torn down at interpreter exit, in no fixed order with
    the threads of the gloo backend. The barrier lets no rank leave while another still
    communicates.

    Example:
        >>> close_distributed()  # not under torchrun: no process group, nothing to do
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    gc.collect()  # a Trainer in a reference cycle still holds the group
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


_OPTIMIZER_SETTINGS = ("lr", "lr_step", "lr_gamma", "momentum", "weight_decay")


class Trainer:
    """Trains an `ALPNet` on episodes from an `EpisodeSampler`.

    Args:
        model: the network (moved to ``device``).
        sampler: anything with ``episode(index) -> Episode``; its stream is indexed by step.
        config: `TrainConfig` (default: the paper's settings).
        device: where to train (default: CUDA if available, else CPU).
        validate: optional ``callable(model) -> float`` (higher is better), run every
            ``config.validate_every`` steps in eval mode; the best model goes to ``best.pt``.
        metadata: plain values stored at the top level of every checkpoint, e.g. the
            ``image_size`` and intensity recipe (``modality``) that inference must reuse.

    Under ``torchrun`` (an initialised default process group) the model is wrapped in
    DistributedDataParallel; each rank draws its own episode stream (the sampler's ``rank``),
    and only rank 0 logs and writes checkpoints.

    Example:
        >>> import numpy as np
        >>> from fewshotseg import ALPNet, EpisodeSampler
        >>> rng = np.random.default_rng(0)
        >>> images = [rng.random((2, 32, 32)).astype("float32")]
        >>> labels = [np.repeat(np.arange(4), 256).reshape(1, 32, 32).repeat(2, 0) + 1]
        >>> sampler = EpisodeSampler(images, labels, image_size=32, min_foreground=10, seed=0)
        >>> trainer = Trainer(ALPNet(backbone="tiny", feature_dim=8), sampler,
        ...                   TrainConfig(iterations=2, progress=False), device="cpu")
        >>> history = trainer.fit()
        >>> trainer.step
        2
    """

    def __init__(
        self,
        model: ALPNet,
        sampler: Any,
        config: TrainConfig | None = None,
        *,
        device: str | torch.device | None = None,
        validate: Callable[[ALPNet], float] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.config = config if config is not None else TrainConfig()
        self.metadata = dict(metadata or {})
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self._amp_dtype = autocast_dtype(self.config.amp, self.device)
        if prefers_channels_last(self._amp_dtype, self.device):
            self.model.to(memory_format=torch.channels_last)
        self.sampler = sampler
        self.validate = validate
        self.rank, self.world_size = _distributed()
        if self.world_size > 1 and hasattr(sampler, "rank"):
            sampler.rank = self.rank
        torch.manual_seed(self.config.seed)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=self.config.lr,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=self.config.lr_step, gamma=self.config.lr_gamma
        )
        self.step = 0
        self.best_score = -math.inf
        self.history = TrainHistory()
        # training seconds over every fit of this run, resumed ones included (saved in checkpoints)
        self.train_seconds = 0.0
        self._fit_started: float | None = None
        self.config_changes: list[dict[str, Any]] = []
        self._nonfinite_in_a_row = 0
        self._loss = LossModule(
            self.model, bg_weight=self.config.bg_weight, align_weight=self.config.align_weight
        )
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._loss = nn.parallel.DistributedDataParallel(self._loss, device_ids=ids)
        self._scaler: torch.amp.GradScaler | None = None
        if self._amp_dtype == torch.float16:
            self._scaler = torch.amp.GradScaler(self.device.type)

    # -------------------------------------------------------------------- steps
    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimisation step on a batch of episodes (``fit`` counts ``step``, not this).

        Args:
            batch: an `EpisodeBatch` (support images ``(B, S, 1, H, W)`` float32, masks
                ``(B, S, N, H, W)``, query ``(B, 1, H, W)``, labels ``(B, H, W)`` int64), one
                `Episode` or a sequence of them.

        Returns:
            Python floats: ``loss = seg_loss + align_weight * align_loss`` (`episode_loss`),
            ``lr`` (the rate this step used) and ``skipped``: 1.0 when a non-finite loss skipped
            the update (model and BatchNorm statistics unchanged), else 0.0.

        Example:
            >>> from fewshotseg.episode_records import Episode
            >>> m = torch.zeros(1, 1, 32, 32); m[..., 8:24, 8:24] = 1  # (S, N, H, W) one-hot
            >>> ep = Episode(torch.rand(1, 1, 32, 32), m, torch.rand(1, 32, 32), m[0, 0].long())
            >>> out = Trainer(ALPNet(backbone="tiny", feature_dim=8), None).train_step(ep)
            >>> abs(out["loss"] - out["seg_loss"] - out["align_loss"]) < 1e-5, out["skipped"]
            (True, 0.0)
        """
        batch = self._as_batch(batch).to(self.device)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # BatchNorm updates its running statistics during the forward pass; keep a copy so a
        # non-finite step cannot poison them.
        buffers = [b.detach().clone() for b in self.model.buffers()]
        with autocast(self._amp_dtype, self.device):
            loss, seg, align = self._loss(
                batch.support_images,
                batch.support_masks,
                batch.query_images,
                batch.query_labels,
            )
        lr = self.optimizer.param_groups[0]["lr"]
        stats = {
            "loss": float(loss.detach()),
            "seg_loss": float(seg),
            "align_loss": float(align),
            "lr": lr,
        }
        if not torch.isfinite(loss):
            self._nonfinite_in_a_row += 1
            self.history.skipped_steps += 1
            warnings.warn(
                f"non-finite loss at step {self.step} ({self._nonfinite_in_a_row} in a row); "
                "step skipped",
                RuntimeWarning,
                stacklevel=2,
            )
            if self._nonfinite_in_a_row >= self.config.max_nonfinite:
                raise RuntimeError(
                    f"{self._nonfinite_in_a_row} non-finite losses in a row at step {self.step}: "
                    "training stopped; the last good checkpoint is kept. Lower the learning "
                    "rate, or check the inputs for NaN/inf"
                )
            with torch.no_grad():
                for buf, saved in zip(self.model.buffers(), buffers, strict=True):
                    buf.copy_(saved)
            return {**stats, "skipped": 1.0}
        self._nonfinite_in_a_row = 0
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        return {**stats, "skipped": 0.0}

    @staticmethod
    def _as_batch(batch: Any) -> Any:
        from fewshotseg.episode_records import Episode, collate_episodes

        if isinstance(batch, Episode):
            return collate_episodes([batch])
        if isinstance(batch, (list, tuple)):
            return collate_episodes(list(batch))
        return batch

    def _batches(self, start_step: int) -> Iterator[Any]:
        from fewshotseg.episode_records import collate_episodes

        cfg = self.config
        first, last = start_step * cfg.batch_size, cfg.iterations * cfg.batch_size
        loader = torch.utils.data.DataLoader(
            _EpisodeRange(self.sampler),
            batch_size=cfg.batch_size,
            sampler=_IndexRange(first, last),
            num_workers=cfg.num_workers,
            collate_fn=collate_episodes,
            persistent_workers=False,
            worker_init_fn=ignore_stop_signals if cfg.num_workers else None,
        )
        return iter(loader)

    # --------------------------------------------------------------------- loop
    def fit(self) -> TrainHistory:
        """Train until ``config.iterations``; resumes from ``checkpoint_dir/last.pt`` if present.

        Ctrl-C (SIGINT) or SIGTERM stops the run at the end of the current step, saves the
        checkpoint and raises `TrainingInterrupted`; rerunning ``fit`` continues from there.
        While it runs, ``fit`` holds an exclusive lock on ``checkpoint_dir``
        (`fewshotseg.checkpoints.RunFolderLock`; a second training there fails with an error
        naming the process that holds it) and first removes the temporary files that an
        interrupted save left there. Returns the `TrainHistory`.

        Example:
            >>> import tempfile, numpy as np; from fewshotseg import EpisodeSampler
            >>> x = np.arange(128.0).reshape(2, 8, 8)  # one superpixel (id 1) per slice
            >>> s = EpisodeSampler([x], [x > 0], image_size=32, seed=0)
            >>> cfg = TrainConfig(iterations=2, log_every=1, checkpoint_dir=tempfile.mkdtemp())
            >>> Trainer(ALPNet(backbone="tiny", feature_dim=8), s, cfg, device="cpu").fit().steps
            [1, 2]
            >>> load_checkpoint(Path(cfg.checkpoint_dir) / "last.pt")["step"]
            2
        """
        cfg = self.config
        ckpt_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        lock = RunFolderLock(ckpt_dir) if ckpt_dir is not None and self.rank == 0 else None
        if lock is not None:
            lock.acquire()
        try:
            if lock is not None:
                clean_stale_temp_files(ckpt_dir)  # type: ignore[arg-type]
            return self._fit(ckpt_dir)
        finally:
            if lock is not None:
                lock.release()

    def _fit(self, ckpt_dir: Path | None) -> TrainHistory:
        cfg = self.config
        if ckpt_dir is not None and (ckpt_dir / CHECKPOINT_NAME).is_file():
            self.load(ckpt_dir / CHECKPOINT_NAME)
            logger.info("resumed from %s at step %d", ckpt_dir / CHECKPOINT_NAME, self.step)
        if self.step >= cfg.iterations:
            return self.history
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.iterations, initial=self.step, desc="training", unit="it")
        started = self._fit_started = time.perf_counter()
        window: list[tuple[float, float, float]] = []  # (loss, seg, align) since the last log
        first_step = self.step
        window_started, window_first = started, self.step  # it/s over the last log window
        stack = contextlib.ExitStack()
        requested = stack.enter_context(stop_requests())
        try:
            for batch in self._batches(self.step):
                out = self.train_step(batch)
                self.step += 1
                window.append((out["loss"], out["seg_loss"], out["align_loss"]))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{out['loss']:.3f}", align=f"{out['align_loss']:.3f}")
                if self.step == first_step + min(5, cfg.iterations - first_step):
                    self._log_eta(first_step, time.perf_counter() - started)
                if self.step % cfg.log_every == 0 or self.step == cfg.iterations:
                    now = time.perf_counter()
                    self._log(out, window, (self.step - window_first) / (now - window_started))
                    self._write_metrics(ckpt_dir, self.elapsed_seconds())
                    window, window_started, window_first = [], now, self.step
                if cfg.validate_every and self.validate and self.step % cfg.validate_every == 0:
                    self._run_validation(ckpt_dir)
                if ckpt_dir is not None and self.step % cfg.checkpoint_every == 0:
                    self._save_rank0(ckpt_dir / CHECKPOINT_NAME)
                if ckpt_dir is not None and cfg.snapshot_every and (
                    self.step % cfg.snapshot_every == 0
                ):
                    self._save_rank0(ckpt_dir / f"step_{self.step:06d}.pt")
                if self._should_stop(requested) and self.step < cfg.iterations:
                    if ckpt_dir is not None:
                        self._save_rank0(ckpt_dir / CHECKPOINT_NAME)
                    logger.warning("stopped by a signal at step %d; checkpoint saved", self.step)
                    raise TrainingInterrupted(
                        requested[0] if requested else signal.SIGTERM, self.step
                    )
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread
            if ckpt_dir is not None:
                self._save_rank0(ckpt_dir / CHECKPOINT_NAME)
                logger.warning("interrupted at step %d; checkpoint saved", self.step)
            raise
        finally:
            stack.close()
            if bar is not None:
                bar.close()
            self.history.seconds += time.perf_counter() - started
            self.train_seconds, self._fit_started = self.elapsed_seconds(), None
        if ckpt_dir is not None:
            self._save_rank0(ckpt_dir / CHECKPOINT_NAME)
        return self.history

    def elapsed_seconds(self) -> float:
        """Seconds spent training this run so far, over all its processes: the clock a
        checkpoint saves, so a resumed run's ``metrics.csv`` continues it instead of restarting.

        Example:
            >>> Trainer(ALPNet(backbone="tiny", feature_dim=8), sampler=None).elapsed_seconds()
            0.0
        """
        if self._fit_started is None:
            return self.train_seconds
        return self.train_seconds + time.perf_counter() - self._fit_started

    def _should_stop(self, requested: list[int]) -> bool:
        """True when a stop was requested here or, under torchrun, on any rank (so all agree)."""
        if self.world_size == 1:
            return bool(requested)
        flag = torch.tensor([float(bool(requested))], device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _log_eta(self, first_step: int, seconds: float) -> None:
        """The time per step measured on this run's first steps, and what it predicts."""
        done = self.step - first_step
        if self.rank != 0 or done <= 0:
            return
        per_step = seconds / done
        left = (self.config.iterations - self.step) * per_step
        logger.info(
            "%.3g s/step over the first %d step(s) (including warm-up): about %s for the %d "
            "left",
            per_step,
            done,
            _duration(left),
            self.config.iterations - self.step,
        )

    def _write_metrics(self, ckpt_dir: Path | None, seconds: float) -> None:
        """Append the last logged step to ``metrics.csv`` in the run folder (rank 0)."""
        if ckpt_dir is None or self.rank != 0 or not self.history.steps:
            return
        path = ckpt_dir / METRICS_NAME
        h = self.history
        row = [h.steps[-1], h.loss[-1], h.seg_loss[-1], h.align_loss[-1], h.lr[-1]]
        row += [h.rate[-1] * self.config.batch_size if h.rate else float("nan"), seconds]
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        new = not path.is_file()
        with path.open("a", encoding="utf-8") as f:
            if new:
                f.write(",".join(METRICS_COLUMNS) + "\n")
            f.write(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in row) + "\n")

    def _log(
        self, out: dict[str, float], window: list[tuple[float, float, float]], rate: float
    ) -> None:
        # means over the same (finite-loss) steps: the logged loss = seg + align_weight * align
        finite = [v for v in window if math.isfinite(v[0])]
        means = [sum(col) / len(finite) for col in zip(*finite, strict=True)]
        mean, seg, align = means or [math.nan] * 3
        h = self.history
        h.steps.append(self.step)
        h.loss.append(mean)
        h.seg_loss.append(seg)
        h.align_loss.append(align)
        h.lr.append(out["lr"])
        h.rate.append(rate)
        if self.rank == 0:
            left = (self.config.iterations - self.step) / rate if rate > 0 else float("nan")
            logger.info(
                "step %d loss %.4f (seg %.4f, align %.4f) lr %.2e, %.2f it/s (recent), eta %s",
                self.step,
                mean,
                seg,
                align,
                out["lr"],
                rate,
                _duration(left),
            )

    def _run_validation(self, ckpt_dir: Path | None) -> None:
        was_training = self.model.training
        self.model.eval()
        try:
            score = float(self.validate(self.model))  # type: ignore[misc]
        finally:
            self.model.train(was_training)
        self.history.validation.append((self.step, score))
        logger.info("step %d validation %.4f", self.step, score)
        if score > self.best_score:
            self.best_score = score
            if ckpt_dir is not None:
                self._save_rank0(ckpt_dir / BEST_NAME)

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint dict: tensors and plain Python values only (``model`` and
        ``optimizer`` state dicts, ``step``, ``config`` as a dict, RNG states, ``version``, and
        the trainer's ``metadata`` at the top level).

        Example:
            >>> trainer = Trainer(ALPNet(backbone="tiny", feature_dim=8), sampler=None)
            >>> state = trainer.state_dict()  # only fit needs a sampler
            >>> state["step"], state["config"]["lr"], state["model_config"]["backbone"]
            (0, 0.001, 'tiny')
        """
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            **self.metadata,
            "model": self.model.state_dict(),
            "model_config": self.model.model_config,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": rng,
            "config": self.config.to_dict(),
            "best_score": self.best_score,
            "train_seconds": self.elapsed_seconds(),
            "config_changes": list(self.config_changes),
            "version": __version__,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write a checkpoint atomically (temporary file + rename), with its content hash.

        Example:
            >>> import tempfile; path = Path(tempfile.mkdtemp()) / "last.pt"
            >>> trainer = Trainer(ALPNet(backbone="tiny", feature_dim=8), sampler=None)
            >>> trainer.save(path); load_checkpoint(path)["model_config"]["feature_dim"]
            8
        """
        save_checkpoint(self.state_dict(), Path(path))

    def _save_rank0(self, path: Path) -> None:
        if self.rank == 0:
            self.save(path)

    def load(self, path: str | os.PathLike) -> None:
        """Restore model, optimiser, scheduler, step and RNG from a checkpoint.

        Optimiser settings of this trainer's config that differ from the checkpoint's
        (``lr``, ``lr_step``, ``lr_gamma``, ``momentum``, ``weight_decay``) win: the learning
        rate becomes what the new schedule gives at the checkpoint's scheduler step,
        ``lr * lr_gamma ** (step // lr_step)``, as if the run had used it from the start. The
        change is logged and recorded in ``config_changes`` (saved in later checkpoints).

        Example:
            >>> import tempfile; path = Path(tempfile.mkdtemp()) / "last.pt"
            >>> a, b = (Trainer(ALPNet(backbone="tiny", feature_dim=8), sampler=None) for _ in "ab")
            >>> a.step = 7; a.save(path); b.load(path)
            >>> pa, pb = (list(t.model.parameters()) for t in (a, b))
            >>> b.step, all(torch.equal(x, y) for x, y in zip(pa, pb))
            (7, True)
        """
        ckpt = load_checkpoint(path, map_location=self.device)
        load_model_state(self.model, ckpt["model"], source=f"checkpoint {str(path)!r}")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(ckpt["step"])
        self.best_score = float(ckpt.get("best_score", -math.inf))
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))  # older checkpoints lack it
        self.config_changes = list(ckpt.get("config_changes", []))
        saved = ckpt.get("config", {})
        changed = {
            k: {"from": saved[k], "to": getattr(self.config, k)}
            for k in _OPTIMIZER_SETTINGS
            if k in saved and saved[k] != getattr(self.config, k)
        }
        if changed:
            self._apply_optimizer_settings()
            self.config_changes.append({"step": self.step, **changed})
            logger.warning(
                "resuming %s at step %d with new optimiser settings %s; learning rate now %.3g",
                path,
                self.step,
                ", ".join(f"{k} {v['from']} -> {v['to']}" for k, v in changed.items()),
                self.optimizer.param_groups[0]["lr"],
            )
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])

    def _apply_optimizer_settings(self) -> None:
        """Make optimiser and scheduler follow ``self.config`` at the scheduler's current step."""
        cfg, sched = self.config, self.scheduler
        sched.step_size, sched.gamma = cfg.lr_step, cfg.lr_gamma
        lr = cfg.lr * cfg.lr_gamma ** (sched.last_epoch // cfg.lr_step)
        for group in self.optimizer.param_groups:
            group.update(lr=lr, initial_lr=cfg.lr, momentum=cfg.momentum,
                         weight_decay=cfg.weight_decay)  # fmt: skip
        sched.base_lrs = [cfg.lr] * len(self.optimizer.param_groups)
        sched._last_lr = [lr] * len(self.optimizer.param_groups)

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike,
        sampler: Any,
        *,
        device: str | torch.device | None = None,
        **config_overrides: Any,
    ) -> Trainer:
        """Rebuild model, optimiser and config from a checkpoint and continue from its step.

        ``config_overrides`` replace stored settings (e.g. ``iterations=`` to train longer).

        Example:
            >>> import tempfile; path = Path(tempfile.mkdtemp()) / "last.pt"
            >>> Trainer(ALPNet(backbone="tiny", feature_dim=8), None).save(path)
            >>> trainer = Trainer.resume(path, sampler=None, iterations=50)
            >>> trainer.step, trainer.config.iterations, trainer.model.model_config["backbone"]
            (0, 50, 'tiny')
        """
        ckpt = load_checkpoint(path)
        config = TrainConfig(**{**ckpt["config"], **config_overrides})
        trainer = cls(ALPNet.from_config(ckpt["model_config"]), sampler, config, device=device)
        trainer.load(path)
        return trainer

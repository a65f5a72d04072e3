"""`TrainConfig`: the settings of a training run, in one frozen dataclass whose defaults are the
paper's, and its presets (`TrainConfig.cpu_preset`).

`fewshotseg.training.Trainer` runs with one (and re-exports it); checkpoints store it as
``to_dict()``; ``fewshotseg train`` makes one flag per field, help text from the attributes below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from fewshotseg.precision import check_amp

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; the defaults are the paper's (section 4, "Implementation").

    Attributes:
        iterations: optimisation steps in total (a resumed run may raise it).
        batch_size: episodes per step, run through the backbone in one call.
        lr, momentum, weight_decay: SGD settings.
        lr_gamma, lr_step: the learning rate is multiplied by ``lr_gamma`` every ``lr_step``
            steps (the paper: 0.98 per 1000; the reference code used 0.95).
        bg_weight: cross-entropy weight of the background class (foreground classes: 1).
        align_weight: weight of the prototype alignment loss (0 switches it off).
        amp: mixed precision: ``True``, ``False`` or ``"auto"`` (`fewshotseg.precision`). On
            CUDA bf16 where supported, else fp16 with a GradScaler; on a CPU bf16 where the
            processor runs it natively, else float32; with bf16 on a CPU the model's weights are
            put in channels-last memory format, which oneDNN's bf16 convolutions need to be
            fast (together 2.5-3x faster than fp32 in a first measurement; see
            docs/benchmarks.md). Weights, optimizer state and
            BatchNorm statistics stay float32 either way.
        seed: seeds the model-side randomness; episodes come from the sampler's own seed.
            For runs that are bit-identical from the first weight on, build the model after
            ``torch.manual_seed(seed)`` and give the sampler the same seed, as ``fewshotseg
            train --seed`` does.
        checkpoint_dir: where ``last.pt`` (and ``best.pt``) go; a run there resumes.
        checkpoint_every: steps between checkpoints (one is always written at the end).
        snapshot_every: steps between kept snapshots ``step_NNNNNN.pt`` besides ``last.pt``,
            for a learning curve evaluated afterwards (0 = none).
        log_every: steps between log lines.
        num_workers: DataLoader worker processes building episodes (0 = in the main process).
        max_nonfinite: this many non-finite losses in a row stop training with an error.
        validate_every: steps between calls of the validation hook (0 = never).
        progress: show a tqdm bar (rank 0 only).

    Example:
        >>> cfg = TrainConfig(iterations=500, log_every=50)
        >>> cfg.lr, cfg.bg_weight, cfg.amp
        (0.001, 0.05, False)
    """

    iterations: int = 100_000
    batch_size: int = 1
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_gamma: float = 0.98
    lr_step: int = 1000
    bg_weight: float = 0.05
    align_weight: float = 1.0
    amp: bool | Literal["auto"] = False
    seed: int = 0
    checkpoint_dir: str | None = None
    checkpoint_every: int = 1000
    snapshot_every: int = 0
    log_every: int = 100
    num_workers: int = 0
    max_nonfinite: int = 20
    validate_every: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("iterations", "batch_size", "lr_step", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "validate_every", "weight_decay", "align_weight", "momentum"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 < self.lr_gamma <= 1 or self.bg_weight < 0:
            raise ValueError("TrainConfig needs lr > 0, 0 < lr_gamma <= 1 and bg_weight >= 0")
        check_amp(self.amp)

    @classmethod
    def cpu_preset(cls, **overrides: Any) -> TrainConfig:
        """The CPU recipe for ``ALPNet(backbone="resnet18")`` at 256 x 256: 6250 steps of 4
        episodes (25000 episodes), lr 4e-3 decayed x0.98 every 250 steps, checkpoints every
        250, ``amp="auto"`` (bf16 where the CPU runs it natively).

        The learning rate is the paper's scaled with the batch (the loss is the batch mean) and
        decays by the paper's factor per 1000 episodes. Chosen on the validation patients of
        five CHAOS folds, where it beat 15000 steps of one episode (the previous preset): the
        batch-1 recipe had stopped improving at 12500-15000 episodes, the batched one was
        still above that plateau at 20000-25000 (docs/results.md, "The batched recipe, five
        folds"). Overriding ``batch_size`` alone keeps lr 4e-3: scale ``lr`` with it
        (``fewshotseg train`` says so).

        Time depends on the CPU: 0.56 s per step with bf16 + channels-last on a 2-core
        AVX512-BF16/AMX Xeon (~1 h when nothing else runs; 1.1-1.3 h per CHAOS fold at one
        thread with a second run beside it); 0.35 s per step on a 2-core Zen 5 AMD EPYC with
        AVX512-BF16 and no AMX (0.61 h alone; ~0.96 h per fold at one thread beside a second
        run); 1.07 s per step on a 2-core Zen 4 AMD EPYC with AVX512-BF16 (~1.9 h per fold at
        one thread beside a second run); in fp32 on CPUs without native bf16, 2.1 s per step on
        a 2-core AVX2 AMD EPYC (~3.7 h). The trainer logs the rate it measures and an ETA.

        The recipe's best figures come from two such runs (``seed`` 0 and 1) averaged at test
        time (`fewshotseg.PredictorEnsemble`): five CHAOS folds, 75.79 paper protocol / 74.14
        realistic against 74.82 / 73.43 for one run, for twice the training time.

        Example:
            >>> cfg = TrainConfig.cpu_preset(iterations=100)  # keyword overrides win
            >>> cfg.iterations, cfg.batch_size, cfg.lr, cfg.amp
            (100, 4, 0.004, 'auto')
        """
        settings: dict[str, Any] = {
            "amp": "auto",
            "iterations": 6250,
            "batch_size": 4,
            "lr": 4e-3,
            "lr_step": 250,
            "checkpoint_every": 250,
            "log_every": 50,
        }
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form of plain Python values (stored in checkpoints; ``TrainConfig(**d)``
        rebuilds the config).

        Example:
            >>> d = TrainConfig(seed=3).to_dict()
            >>> d["seed"], TrainConfig(**d) == TrainConfig(seed=3)
            (3, True)
        """
        return dataclasses.asdict(self)

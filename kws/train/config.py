"""The `trainer` and `init` sections of the run config: how a run trains (epochs, batch, precision, device,
seed) and where its weights start (`kws train --init`). Torch-free: `kws.config` imports it."""

from __future__ import annotations

from dataclasses import dataclass

from kws.checks import at_least, require


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int = 200
    max_steps: int | None = None
    batch_size: int = 128  # per process
    precision: str = "32"  # "32" | "bf16" | "16"; the recipe configs say bf16 (the reference: fp16 AMP)
    seed: int = 0
    device: str = "auto"
    val_every_n_steps: int | None = None
    log_every_n_steps: int = 50
    compile: bool = False
    label_smoothing: float = 0.0  # the recipe's loss is plain cross-entropy
    ema_decay: float = 0.0  # > 0: validate and save a moving average of the weights (kws.train.averaging)

    def check(self, key: str) -> None:
        at_least(f"{key}.epochs", self.epochs, 1)
        require(
            0.0 <= self.label_smoothing < 1.0, f"{key}.label_smoothing", "in [0, 1)", self.label_smoothing
        )
        require(0.0 <= self.ema_decay < 1.0, f"{key}.ema_decay", "in [0, 1) (0: off)", self.ema_decay)
        if self.max_steps is not None:
            require(self.max_steps >= 1, f"{key}.max_steps", ">= 1 (or null: no limit)", self.max_steps)
        at_least(f"{key}.batch_size", self.batch_size, 1)
        at_least(f"{key}.seed", self.seed, 0)  # numpy's SeedSequence takes no negative seed
        if self.val_every_n_steps is not None:
            require(
                self.val_every_n_steps >= 1,
                f"{key}.val_every_n_steps",
                ">= 1 (or null: once per epoch)",
                self.val_every_n_steps,
            )
        at_least(f"{key}.log_every_n_steps", self.log_every_n_steps, 1)


@dataclass(frozen=True)
class InitConfig:
    """Where a new run's weights start (`kws train --init`): random (the recipe) or a checkpoint's."""

    checkpoint: str | None = None  # a kws checkpoint or a NeMo .nemo model; its model and features are used
    freeze: str | None = None  # "encoder": train the classifier only (the encoder and its BatchNorms fixed)

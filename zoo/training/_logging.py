"""A run's scalars for TensorBoard (``tensorboard=True``): each optimizer step's loss and learning
rate, each epoch's metrics, written by rank 0 under ``output_dir/tensorboard`` with PyTorch's own
``SummaryWriter``; ``tensorboard --logdir runs/`` shows every run side by side. Off, it writes
nothing and imports nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the folder under a run's output_dir that holds its event files
FOLDER = "tensorboard"


class RunLog:
    """Where a run's scalars go: a ``SummaryWriter``, or nowhere."""

    def __init__(self, output_dir: Path, enabled: bool, rank: int = 0) -> None:
        self.writer: Any = None
        if enabled and rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("tensorboard=True writes TensorBoard's event files: pip install "
                                  "'zoo-models[tensorboard]'") from None
            self.writer = SummaryWriter(log_dir=str(output_dir / FOLDER))

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        """``values`` at ``step``, each under ``prefix/name``."""
        if self.writer is None:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

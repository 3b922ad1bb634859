"""A model's verified files on this machine: :class:`ModelFiles`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zoo.catalog._spec import ModelSpec, Source


@dataclass(frozen=True)
class ModelFiles:
    """A model's files on this machine: ``root`` is the folder that ``spec.sha256`` keys are relative to."""

    spec: ModelSpec
    root: Path
    source: Source
    verified: tuple[str, ...] = field(default=())
    single: str | None = None  # the one file of a single-file source (the folder holds other things)

    def path(self, name: str) -> Path:
        """Absolute path of a file inside the model folder."""
        return self.root / name

    def members(self) -> list[str]:
        """The model's files, relative to :attr:`root` (what a bundle must carry)."""
        if self.single:
            return [self.single]
        return sorted(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
            if p.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                       for part in p.relative_to(self.root).parts)
        )

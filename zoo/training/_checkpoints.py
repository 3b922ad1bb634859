"""Checkpoints of a finetuning run, written so that a crash at any moment loses nothing already saved.

Every weight file gets a new name (``best-e003.head.safetensors``); a manifest naming the current
files is then swapped in atomically (temporary file, then rename), and only after that are files no
manifest names deleted. ``zoo.json`` describes the best model (what ``zoo.load`` reads);
``resume.json`` the last finished epoch, with the optimizer and RNG state (what ``resume=True`` reads).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.store._atomic import atomic_path, write_json_atomic
from zoo.store._integrity import sha256_file
from zoo.store._manifest import MANIFEST, read_json

if TYPE_CHECKING:
    import torch

RESUME = "resume.json"
_WEIGHT_SUFFIXES = (".safetensors", ".pt")


def save_tensors(path: Path, module: torch.nn.Module) -> str:
    """``module``'s weights as safetensors (shared tensors handled), atomically; returns the file name."""
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(module, str(tmp))
    return path.name


def load_tensors(module: torch.nn.Module, path: Path) -> None:
    """Load weights that :func:`save_tensors` wrote (the counterpart that restores shared tensors)."""
    from safetensors.torch import load_model

    load_model(module, str(path))


def save_state(path: Path, state: dict[str, Any]) -> str:
    """Optimizer and RNG state (tensors, numbers, lists: readable with ``weights_only=True``)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path.name


def load_state(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state() -> dict[str, Any]:
    """The random generators a resumed run must continue from: the CPU's, and every CUDA device's."""
    import torch

    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` saved."""
    import torch

    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_run_manifest(directory: Path, name: str, data: dict[str, Any], files: list[str]) -> None:
    """Swap in a manifest recording ``files`` with their sha256 (call :func:`prune` once every
    manifest of the step is written)."""
    data = {**data, "files": {f: sha256_file(directory / f) for f in files}}
    write_json_atomic(directory / name, data)


def read_run_manifest(directory: Path, name: str) -> dict[str, Any] | None:
    path = directory / name
    return read_json(path) if path.is_file() else None


def read_resume(directory: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The last finished epoch that ``resume.json`` records (None when there is none), refused by
    name when the run there had other settings."""
    state = read_run_manifest(directory, RESUME)
    if state is not None and state["settings"] != settings:
        changed = sorted(k for k in settings if state["settings"].get(k) != settings[k])
        raise ZooError(f"{directory} holds a run with other settings ({', '.join(changed)}); "
                       "use another output_dir or the same settings")
    return state


def prune(directory: Path) -> None:
    """Delete weight files that neither manifest names (left over from earlier epochs or a crash)."""
    keep: set[str] = set()
    for name in (MANIFEST, RESUME):
        manifest = read_run_manifest(directory, name)
        if manifest:
            keep.update(manifest.get("files", {}))
    for path in directory.iterdir():
        stale_weights = path.is_file() and path.suffix in _WEIGHT_SUFFIXES and path.name not in keep
        if stale_weights or (path.name.startswith(".") and path.name.endswith(".tmp")):
            path.unlink(missing_ok=True)

"""Training curves as a PNG next to the checkpoint."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict[str, float]], path: Path, *, title: str) -> Path:
    """Loss (train and validation) and the validation scores per epoch (accuracy and macro-F1 of a
    classifier, recall@k of a contrastive run): every ``val_`` metric other than the loss."""
    # A Figure of its own, not pyplot's: no backend switched and no global figure in the caller's
    # process (a notebook's plots stay as they were), and no GUI toolkit imported.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if "val_loss" in history[0]:
        left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
        for key in (k for k in history[0] if k.startswith("val_") and k != "val_loss"):
            label = key.removeprefix("val_").replace("macro_f1", "macro-F1")
            right.plot(epochs, [h[key] for h in history], marker="o", label=label)
        right.set_ylim(0, 1.02)
    right.set(xlabel="epoch", title="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
        if ax.get_lines():
            ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path

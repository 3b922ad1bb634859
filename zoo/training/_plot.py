"""Training curves as a PNG next to the checkpoint."""

from __future__ import annotations

from pathlib import Path


def plot_history(history: list[dict[str, float]], path: Path, *, title: str) -> Path:
    """Loss (train and validation) and validation accuracy / macro-F1 per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if "val_loss" in history[0]:
        left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
        right.plot(epochs, [h["val_accuracy"] for h in history], marker="o", label="accuracy")
        right.plot(epochs, [h["val_macro_f1"] for h in history], marker="o", label="macro-F1")
        right.set_ylim(0, 1.02)
    right.set(xlabel="epoch", title="validation")
    left.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Finetuning: strategies, heads, the training loop, checkpoints and the finetuned model."""

"""Training: SFT and GRPO on DeepSpeed."""

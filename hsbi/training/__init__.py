"""Training neural estimators with PyTorch Lightning."""

from hsbi.training.lre import train_lre_member

__all__ = ["train_lre_member"]

"""Training neural estimators with PyTorch Lightning."""

from hsbi.training.dle import train_dle_member
from hsbi.training.lre import train_lre_member

__all__ = ["TRAINERS", "train_dle_member", "train_lre_member"]

#: Member trainers by ``estimator.kind``.
TRAINERS = {"lre": train_lre_member, "dle": train_dle_member}

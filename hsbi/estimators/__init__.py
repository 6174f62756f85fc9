"""Neural estimators (networks and ensembles) with a common ``log_components`` interface."""

from hsbi.estimators.lre import LREEnsemble, RatioNet, load_members, save_member

__all__ = ["LREEnsemble", "RatioNet", "load_members", "save_member"]

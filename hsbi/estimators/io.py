"""Saving and loading ensemble members without pickle: safetensors plus a JSON description."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["Standardised", "load_nets", "save_nets"]


class Standardised(nn.Module):
    """A module whose inputs ``(N, D + 1)`` (features, then nuisance) are standardised with
    buffers set from training data, so a saved state dict is self-contained."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))

    def set_standardisation(self, inputs: torch.Tensor) -> None:
        """Set input shift and scale from training inputs of shape ``(N, D + 1)``."""
        self.shift.copy_(inputs.mean(0))
        self.scale.copy_(inputs.std(0).clamp_min(1e-6))


def save_nets(path: Path, nets: Mapping[str, nn.Module], kind: str) -> None:
    """``weights.safetensors`` (state dicts prefixed by process) and ``estimator.json``
    (kind, processes, constructor arguments from each net's ``hparams``)."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{proc}.{key}": value.detach().contiguous()
        for proc, net in nets.items()
        for key, value in net.state_dict().items()
    }
    save_file(tensors, str(path / "weights.safetensors"))
    meta = {"kind": kind, "processes": list(nets), "hparams": next(iter(nets.values())).hparams}
    (path / "estimator.json").write_text(json.dumps(meta, indent=1) + "\n")


def load_nets(path: Path, cls: type[nn.Module]) -> dict[str, nn.Module]:
    """The nets of one member, rebuilt with ``cls(**hparams)``, in eval mode."""
    meta = json.loads((path / "estimator.json").read_text())
    tensors = load_file(str(path / "weights.safetensors"))
    nets = {}
    for proc in meta["processes"]:
        net = cls(**meta["hparams"])
        prefix = f"{proc}."
        net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        nets[proc] = net.eval()
    return nets

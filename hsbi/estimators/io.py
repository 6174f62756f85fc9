"""Saving and loading ensemble members without pickle: safetensors plus a JSON description."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["load_nets", "save_nets"]


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

"""Saving and loading ensemble members without pickle: safetensors plus a JSON description;
optionally an ONNX export of each network for use outside Python and PyTorch."""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hsbi.exceptions import ConfigError

__all__ = ["Standardised", "export_onnx", "load_nets", "onnx_bytes", "save_nets"]


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


class _Output(nn.Module):
    """The function a network exports: ``forward`` (ratio nets: logits) or ``log_prob`` (flows)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net.log_prob(inputs) if hasattr(self.net, "log_prob") else self.net(inputs)


def export_onnx(nets: Mapping[str, nn.Module], path: Path) -> list[Path]:
    """Write each process's network as ``path/<process>.onnx`` (torch's ``dynamo`` exporter).

    The graph takes ``inputs`` of shape ``(N, D + 1)`` (float32; features, then nuisance; any
    ``N``) and returns ``(N,)``: the logit ``log r_c`` for a ratio net, ``log p_c(x | z)`` for a
    flow. Needs the optional packages ``onnx`` and ``onnxscript`` (``pip install hsbi[onnx]``).
    """
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"config key 'estimator.onnx' = True: needs the package(s) {', '.join(missing)} "
            "(pip install 'hsbi[onnx]'), or set it to false"
        )
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    path.mkdir(parents=True, exist_ok=True)
    files = []
    for proc, net in nets.items():
        example = torch.zeros(2, len(net.shift))
        files.append(path / f"{proc}.onnx")
        torch.onnx.export(
            _Output(net).eval(), (example,), str(files[-1]), dynamo=True, input_names=["inputs"],
            output_names=["output"], dynamic_shapes=({0: torch.export.Dim("rows")},),
            verbose=False, external_data=False,  # the weights inside the file: one self-contained model
        )
    return files


def onnx_bytes(net: nn.Module) -> bytes:
    """One network as an ONNX model (:func:`export_onnx`'s graph: standardisation inside,
    ``inputs`` (N, D + P) float32 -> ``output`` (N,)), as bytes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hsbi-onnx-") as tmp:
        (path,) = export_onnx({"net": net}, Path(tmp))
        return path.read_bytes()

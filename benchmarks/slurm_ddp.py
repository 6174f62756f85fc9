"""One LRE ensemble member trained with Lightning DDP by the tasks of a SLURM job step.

Run it with ``srun`` inside an allocation: every task is one DDP process (rank), and Lightning's
``SLURMEnvironment`` takes the ranks and the master address from ``SLURM_NTASKS``,
``SLURM_PROCID``, ``SLURM_LOCALID`` and ``SLURM_NODELIST`` (hsbi.training.fit chooses it when
the step has ``training.devices x training.nodes`` tasks). This script sets ``training.nodes``
to ``SLURM_NNODES`` and ``training.devices`` to the tasks per node::

    sbatch --nodes=2 --ntasks-per-node=4 --cpus-per-task=1 \\
        --wrap "srun python benchmarks/slurm_ddp.py out/ddp --set training.max_epochs=8"
    sbatch --nodes=1 --ntasks=1 --wrap "srun python benchmarks/slurm_ddp.py out/one"   # reference

Rank 0 writes to OUT the member (``estimator.json``, ``weights.safetensors``) and
``result.json``: the world size, the wall time of the fit, the per-epoch history and, per
process, the validation binary cross-entropy with its standard error (the per-row standard
deviation over sqrt(rows)), so a DDP run can be compared with a one-process run of the same
config and seed. Every rank prints one line.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from hsbi.config import load_config
from hsbi.data import simulate_training_samples, training_arrays
from hsbi.estimators import save_member
from hsbi.training import train_lre_member


def slurm_layout() -> tuple[int, int, int]:
    """``(rank, tasks per node, nodes)`` of this job step task; ``(0, 1, 1)`` outside SLURM."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    if tasks % nodes:
        raise SystemExit(f"slurm_ddp: {tasks} tasks on {nodes} nodes; expected the same number "
                         f"of tasks on every node (--ntasks-per-node)")
    return int(os.environ.get("SLURM_PROCID", "0")), tasks // nodes, nodes


def validation_bce(net: torch.nn.Module, samples: dict, proc: str) -> tuple[float, float]:
    """Mean binary cross-entropy of ``net`` on the validation split of ``proc`` and its
    standard error (per-row standard deviation / sqrt(rows))."""
    x, z, y = training_arrays(samples, "val", proc)
    with torch.no_grad():
        logit = net(torch.as_tensor(np.c_[x, z], dtype=torch.float32)).double()
    rows = torch.nn.functional.binary_cross_entropy_with_logits(
        logit, torch.as_tensor(y, dtype=torch.float64), reduction="none")
    return float(rows.mean()), float(rows.std() / np.sqrt(len(rows)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory for rank 0's member and result.json")
    parser.add_argument("--config", default="default", help="analysis config; default: default")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. training.max_epochs=4")
    parser.add_argument("--seed", type=int, default=1, help="member seed; default: 1")
    args = parser.parse_args()

    rank, devices, nodes = slurm_layout()
    cfg = load_config(args.config, [*args.set, f"training.devices={devices}",
                                    f"training.nodes={nodes}"])
    model = cfg.model.build()
    samples = simulate_training_samples(model, cfg)
    start = time.perf_counter()
    nets, history = train_lre_member(samples, model.processes, cfg.estimator, cfg.training,
                                     seed=args.seed, label=f"rank {rank}",
                                     log=print if rank == 0 else (lambda _: None))
    seconds = time.perf_counter() - start
    # the process group Lightning set up (it stays initialised after the fit): proof of DDP
    ddp_world = dist.get_world_size() if dist.is_initialized() else 1
    bce = {proc: validation_bce(net, samples, proc) for proc, net in nets.items()}
    print(f"slurm_ddp: rank {rank} of {devices * nodes} ({nodes} node(s), DDP world {ddp_world}): "
          f"fit {seconds:.1f} s, "
          + ", ".join(f"{p} val BCE {b:.5f} +- {e:.5f}" for p, (b, e) in bce.items()), flush=True)
    if rank == 0:
        save_member(args.out, nets)
        result = {"world_size": devices * nodes, "nodes": nodes, "ddp_world_size": ddp_world,
                  "fit_seconds": seconds,
                  "val_bce": {p: b for p, (b, _) in bce.items()},
                  "val_bce_error": {p: e for p, (_, e) in bce.items()}, "history": history}
        (args.out / "result.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

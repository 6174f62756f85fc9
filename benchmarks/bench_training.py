"""Training throughput, one run: the Lightning data path against a raw fused-Adam torch loop, and
a 2-process DDP run against a 1-process run.

1. Same MLP (the default LRE classifier), same data (the default signal-vs-reference sample),
   same batch size and optimizer, no validation on either side. Lightning runs hsbi's own
   ``ClassifierModule``, batch loader and Trainer (``hsbi.training``): blocks of
   ``STEPS_PER_CALL`` mini-batches per Lightning step, one optimiser step per mini-batch. The
   two are run alternately ``--repeats`` times and the best rate of each is kept (the machine
   may be shared). ``--dataloader`` also measures Lightning over a default ``DataLoader``.
2. ``train_lre_member`` for one process with ``training.devices`` 1 and 2 (DDP, gloo, spawned
   processes; global batches split across them) for the same epochs: wall time including the
   start-up of the processes, and the training time alone (from the per-epoch report).

Run: ``source setup.sh && python benchmarks/bench_training.py --threads 1`` (``--skip-ddp``,
``--skip-speed``: one part only; ``--precision bf16-mixed --clip 1.0``: both sides in bf16
autocast with gradient clipping, hsbi's steps then through Lightning's precision plugin; goal
>= 0.9 of the raw loop, issue 18). ``--threads 1`` on a shared machine: the DDP processes get
``cores // processes`` threads each from Lightning, and oversubscribed torch threads spin.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from hsbi.config import load_config
from hsbi.data import simulate_training_samples, training_arrays
from hsbi.estimators import RatioNet
from hsbi.training import train_lre_member
from hsbi.training.data import batch_loader
from hsbi.training.fit import STEPS_PER_CALL, fused_adam, make_trainer
from hsbi.training.lre import ClassifierModule

EPOCHS = 4


def data() -> tuple[torch.Tensor, torch.Tensor, object, dict]:
    cfg = load_config()
    samples = simulate_training_samples(cfg.model.build(), cfg)
    x, z, y = training_arrays(samples, "train", "signal")
    return torch.as_tensor(np.c_[x, z], dtype=torch.float32), torch.as_tensor(y), cfg, samples


def raw_loop(inputs: torch.Tensor, target: torch.Tensor, cfg) -> float:
    """The same training in plain torch, with ``training.precision`` (bf16 autocast of the
    forward on CPU) and ``training.gradient_clip_val`` (``clip_grad_norm_``/``clip_grad_value_``)
    as hsbi's loop applies them, the optimiser fused where hsbi's is."""
    torch.manual_seed(0)
    training = cfg.training
    net = RatioNet(2, cfg.estimator.widths, cfg.estimator.activation)
    opt = torch.optim.Adam(net.parameters(), lr=training.learning_rate, fused=fused_adam(training))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    bs = training.batch_size
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=training.precision == "bf16-mixed")
    clip = training.gradient_clip_val
    start = time.perf_counter()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(inputs))
        for i in range(0, len(inputs), bs):
            idx = perm[i : i + bs]
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = loss_fn(net(inputs[idx]), target[idx])
            loss.backward()
            if clip > 0 and training.gradient_clip_algorithm == "norm":
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            elif clip > 0:
                torch.nn.utils.clip_grad_value_(net.parameters(), clip)
            opt.step()
    return EPOCHS * len(inputs) / (time.perf_counter() - start)


def lightning_run(loader, n: int, cfg) -> float:
    torch.manual_seed(0)
    net = RatioNet(2, cfg.estimator.widths, cfg.estimator.activation)
    trainer = make_trainer(dataclasses.replace(cfg.training, max_epochs=EPOCHS), callbacks=[])
    start = time.perf_counter()
    trainer.fit(ClassifierModule(net, cfg.training), train_dataloaders=loader)
    return EPOCHS * n / (time.perf_counter() - start)


def _log(line: str) -> None:
    """Print an epoch line and append it to ``$HSBI_BENCH_LOG`` (also from spawned processes)."""
    print(line)
    with open(os.environ["HSBI_BENCH_LOG"], "a") as f:
        f.write(line + "\n")


def ddp_run(samples: dict, cfg, devices: int) -> tuple[float, float, float]:
    """Wall seconds, training seconds (from the last epoch line) and the last validation loss
    of one member for one process."""
    training = dataclasses.replace(cfg.training, max_epochs=EPOCHS, devices=devices)
    with tempfile.NamedTemporaryFile(suffix=".log") as lines:
        os.environ["HSBI_BENCH_LOG"] = lines.name
        start = time.perf_counter()
        _, history = train_lre_member(samples, ("signal",), cfg.estimator, training, seed=1, log=_log)
        wall = time.perf_counter() - start
        seconds = float(re.findall(r"\(([0-9.]+)s\)", Path(lines.name).read_text())[-1])
    return wall, seconds, history["signal"][-1]["val_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dataloader", action="store_true", help="also a default DataLoader")
    parser.add_argument("--skip-ddp", action="store_true", help="only part 1")
    parser.add_argument("--skip-speed", action="store_true", help="only part 2 (DDP)")
    parser.add_argument("--precision", default="32", help="training.precision of both sides (32, bf16-mixed)")
    parser.add_argument("--clip", type=float, default=0.0, help="training.gradient_clip_val of both sides")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs, target, cfg, samples = data()
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, precision=args.precision,
                                                                gradient_clip_val=args.clip))
    if not args.skip_speed:
        speed(inputs, target, cfg, args)
    if not args.skip_ddp:
        one, two = ddp_run(samples, cfg, 1), ddp_run(samples, cfg, 2)
        print(f"1 process:   wall {one[0]:6.1f} s, training {one[1]:6.1f} s, val_loss {one[2]:.5f}")
        print(f"2-proc DDP:  wall {two[0]:6.1f} s, training {two[1]:6.1f} s, val_loss {two[2]:.5f}  "
              f"(wall ratio 2/1: {two[0] / one[0]:.2f}, training ratio: {two[1] / one[1]:.2f})")


def speed(inputs: torch.Tensor, target: torch.Tensor, cfg, args: argparse.Namespace) -> None:
    """Part 1: raw loop against Lightning, alternately ``args.repeats`` times."""
    bs = cfg.training.batch_size
    raw_loop(inputs[:20_000], target[:20_000], cfg)  # warm-up
    raw, fast = [], []
    for _ in range(args.repeats):
        raw.append(raw_loop(inputs, target, cfg))
        loader = batch_loader(inputs, target, batch_size=bs, shuffle=True, block=STEPS_PER_CALL)
        fast.append(lightning_run(loader, len(inputs), cfg))
    print(f"{len(inputs)} samples x {EPOCHS} epochs, batch {bs}, MLP {list(cfg.estimator.widths)}, "
          f"{torch.get_num_threads()} threads, best of {args.repeats}")
    print(f"raw torch loop (same settings):    {max(raw) / 1e3:8.1f} k samples/s  (all: "
          f"{', '.join(f'{r / 1e3:.1f}' for r in raw)})")
    plain = cfg.training.precision == "32" and cfg.training.gradient_clip_val == 0
    print(f"precision {cfg.training.precision}, gradient clipping {cfg.training.gradient_clip_val or 'off'} "
          f"({'the fast path' if plain else 'through Lightning: manual_backward, the plugin step, clipping'})")
    print(f"Lightning, hsbi data path:         {max(fast) / 1e3:8.1f} k samples/s  ratio "
          f"{max(fast) / max(raw):.2f} (goal >= {0.85 if plain else 0.9}; all: "
          f"{', '.join(f'{r / 1e3:.1f}' for r in fast)})")
    if args.dataloader:
        plain = lightning_run(DataLoader(TensorDataset(inputs, target), batch_size=bs, shuffle=True),
                              len(inputs), cfg)
        print(f"Lightning, default DataLoader:     {plain / 1e3:8.1f} k samples/s  ratio {plain / max(raw):.2f}")


if __name__ == "__main__":
    main()

"""The CUDA path of hsbi's training, on a machine with a GPU (issue 18): one LRE member trained
with ``training.accelerator: gpu`` in fp32 and in bf16-mixed (and 16-mixed with gradient
clipping: the scaler's unscaling before the clip), each checked (finite decreasing losses, the
nets back on the host, their logits finite), and the Lightning data path's throughput against a
raw torch loop on the same device and settings.

Run: ``source setup.sh && python benchmarks/gpu_check.py`` (exit 0: every check passed; 1: one
failed; 2: no CUDA device visible). ``--rows`` and ``--epochs`` size the throughput runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch

from hsbi.config import load_config
from hsbi.data import simulate_training_samples, training_arrays
from hsbi.estimators import RatioNet
from hsbi.training import train_lre_member
from hsbi.training.data import batch_loader
from hsbi.training.fit import STEPS_PER_CALL, fused_adam, make_trainer
from hsbi.training.lre import ClassifierModule

SETTINGS = (("32", 0.0), ("bf16-mixed", 0.0), ("bf16-mixed", 1.0), ("16-mixed", 1.0))


def raw_loop(inputs: torch.Tensor, target: torch.Tensor, cfg, training, epochs: int) -> float:
    """Rows per second of plain torch on the GPU with ``training``'s precision and clipping."""
    torch.manual_seed(0)
    net = RatioNet(inputs.shape[1] - 1, cfg.estimator.widths, cfg.estimator.activation).cuda()
    opt = torch.optim.Adam(net.parameters(), lr=training.learning_rate, fused=fused_adam(training))
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(training.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=training.precision == "16-mixed")
    loss_fn, bs = torch.nn.BCEWithLogitsLoss(), training.batch_size
    x, y = inputs.cuda(), target.cuda()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), device="cuda")
        for i in range(0, len(x), bs):
            idx = perm[i : i + bs]
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn(net(x[idx]), y[idx])
            scaler.scale(loss).backward()
            if training.gradient_clip_val > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(net.parameters(), training.gradient_clip_val)
            scaler.step(opt)
            scaler.update()
    torch.cuda.synchronize()
    return epochs * len(x) / (time.perf_counter() - start)


def lightning_run(inputs: torch.Tensor, target: torch.Tensor, cfg, training, epochs: int) -> float:
    torch.manual_seed(0)
    net = RatioNet(inputs.shape[1] - 1, cfg.estimator.widths, cfg.estimator.activation)
    loader = batch_loader(inputs, target, batch_size=training.batch_size, shuffle=True, block=STEPS_PER_CALL)
    trainer = make_trainer(dataclasses.replace(training, max_epochs=epochs), callbacks=[])
    start = time.perf_counter()
    trainer.fit(ClassifierModule(net, training), train_dataloaders=loader)
    torch.cuda.synchronize()
    return epochs * len(inputs) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); nothing checked")
        return 2
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    cfg = load_config("default", [f"simulation.n_train={args.rows}", "simulation.n_val=20000", "training.max_epochs=3"])
    model = cfg.model.build()
    samples = simulate_training_samples(model, cfg)
    failures = 0
    for precision, clip in SETTINGS:
        training = dataclasses.replace(cfg.training, accelerator="gpu", precision=precision, gradient_clip_val=clip)
        nets, history = train_lre_member(samples, model.processes, cfg.estimator, training, seed=1,
                                         log=lambda _: None)
        losses = [e["val_loss"] for e in history[model.processes[0]]]
        x, z, _ = training_arrays(samples, "val", model.processes[0])
        net = nets[model.processes[0]]
        with torch.no_grad():
            logits = net(torch.as_tensor(np.c_[x, z], dtype=torch.float32))
        ok = (all(np.isfinite(losses)) and losses[-1] < losses[0] and next(net.parameters()).device.type == "cpu"
              and bool(torch.isfinite(logits).all()))
        failures += not ok
        print(f"member {precision:>10} clip {clip}: val_loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"nets on the host: {next(net.parameters()).device.type == 'cpu'}: {'ok' if ok else 'FAILED'}")
    x, z, y = training_arrays(samples, "train", model.processes[0])
    inputs, target = torch.as_tensor(np.c_[x, z], dtype=torch.float32), torch.as_tensor(y)
    for precision, clip in SETTINGS:
        training = dataclasses.replace(cfg.training, accelerator="gpu", precision=precision, gradient_clip_val=clip)
        raw_loop(inputs[:50_000], target[:50_000], cfg, training, 1)  # warm-up
        raw = raw_loop(inputs, target, cfg, training, args.epochs)
        fast = lightning_run(inputs, target, cfg, training, args.epochs)
        print(f"throughput {precision:>10} clip {clip}: raw {raw / 1e3:8.1f} k rows/s, Lightning {fast / 1e3:8.1f} "
              f"k rows/s, ratio {fast / raw:.2f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: the Lightning data path against a raw fused-Adam torch loop, one run.

Same MLP (the default LRE classifier), same data (the default signal-vs-reference sample), same
batch size and optimizer. Lightning runs hsbi's own ``ClassifierModule`` and batch loader
(``hsbi.training``), without validation, so both sides do the same work per epoch. A default
``DataLoader`` over a ``TensorDataset`` is measured too, for scale.
"""

from __future__ import annotations

import time

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from hsbi.config import load_config
from hsbi.data import simulate_training_samples, training_arrays
from hsbi.estimators import RatioNet
from hsbi.training.data import batch_loader
from hsbi.training.lre import ClassifierModule

EPOCHS = 4


def data() -> tuple[torch.Tensor, torch.Tensor, object]:
    cfg = load_config()
    samples = simulate_training_samples(cfg.model.build(), cfg)
    x, z, y = training_arrays(samples, "train", "signal")
    return torch.as_tensor(np.c_[x, z]), torch.as_tensor(y), cfg


def raw_loop(inputs: torch.Tensor, target: torch.Tensor, cfg) -> float:
    torch.manual_seed(0)
    net = RatioNet(2, cfg.estimator.widths, cfg.estimator.activation)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.training.learning_rate, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    bs = cfg.training.batch_size
    start = time.perf_counter()
    for _ in range(EPOCHS):
        perm = torch.randperm(len(inputs))
        for i in range(0, len(inputs), bs):
            idx = perm[i : i + bs]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(inputs[idx]), target[idx]).backward()
            opt.step()
    return EPOCHS * len(inputs) / (time.perf_counter() - start)


def lightning_run(loader: DataLoader, n: int, cfg) -> float:
    torch.manual_seed(0)
    net = RatioNet(2, cfg.estimator.widths, cfg.estimator.activation)
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(ClassifierModule(net, cfg.training), train_dataloaders=loader)
    return EPOCHS * n / (time.perf_counter() - start)


def main() -> None:
    inputs, target, cfg = data()
    bs = cfg.training.batch_size
    raw_loop(inputs[:20_000], target[:20_000], cfg)  # warm-up
    raw = raw_loop(inputs, target, cfg)
    fast = lightning_run(batch_loader(inputs, target, batch_size=bs, shuffle=True), len(inputs), cfg)
    plain = lightning_run(DataLoader(TensorDataset(inputs, target), batch_size=bs, shuffle=True),
                          len(inputs), cfg)
    print(f"{len(inputs)} samples x {EPOCHS} epochs, batch {bs}, MLP {list(cfg.estimator.widths)}, "
          f"{torch.get_num_threads()} threads")
    print(f"raw fused-Adam loop:               {raw / 1e3:8.1f} k samples/s")
    print(f"Lightning, hsbi batch sampler:     {fast / 1e3:8.1f} k samples/s  ratio {fast / raw:.2f} (goal >= 0.85)")
    print(f"Lightning, default DataLoader:     {plain / 1e3:8.1f} k samples/s  ratio {plain / raw:.2f}")


if __name__ == "__main__":
    main()

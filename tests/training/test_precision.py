"""Mixed precision and gradient clipping through Lightning in hsbi's training loop (a real
Trainer on CPU: bf16 autocast, the precision plugin's optimiser step), and the one-line errors of
the accelerator and precision keys."""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import pytest
import torch

from hsbi.config import load_config
from hsbi.config.schema import TrainingConfig
from hsbi.data import simulate_training_samples
from hsbi.estimators import RatioNet
from hsbi.exceptions import ConfigError
from hsbi.training import train_lre_member
from hsbi.training.fit import accelerator_for, make_trainer
from hsbi.training.lre import ClassifierModule, _tensors, loaders

CLIP = 0.05


class _GradNorms(L.Callback):
    """The gradient norm before the module's hook clips it (callbacks' ``on_before_optimizer_step``
    run first) and after the step (``on_train_batch_end``: the last step's gradients, clipped)."""

    def __init__(self) -> None:
        self.before: list[float] = []
        self.after: list[float] = []
        self.dtypes: set[torch.dtype] = set()

    @staticmethod
    def _norm(module: L.LightningModule) -> float:
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()])))

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        self.before.append(self._norm(module))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.after.append(self._norm(module))


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("default", ["simulation.n_train=4000", "simulation.n_val=1000", "training.max_epochs=2",
                                  "training.batch_size=256"])
    model = cfg.model.build()
    return cfg, model, simulate_training_samples(model, cfg)


def _fit(setup, training: TrainingConfig) -> tuple[_GradNorms, list[torch.dtype], int]:
    cfg, model, samples = setup
    proc = model.processes[0]
    L.seed_everything(1, verbose=False)
    train, val = _tensors(samples, "train", proc), _tensors(samples, "val", proc)
    net = RatioNet(train[0].shape[1] - 1, cfg.estimator.widths, cfg.estimator.activation)
    net.set_standardisation(train[0])
    module = ClassifierModule(net, training)
    dtypes: list[torch.dtype] = []
    net.net[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    norms = _GradNorms()
    trainer = make_trainer(training, [norms])
    trainer.fit(module, *loaders(train, val, training, seed=1))
    return norms, dtypes, sum(p.numel() for p in net.parameters())


def test_bf16_mixed_and_clipping_go_through_lightning(setup) -> None:
    """bf16 autocast reaches the network's layers, and every optimiser step's gradients are
    clipped to the norm asked for (measured over 64 steps: norms 0.042 to 0.20 before the clip,
    at most 0.0499997 after it)."""
    cfg, _, _ = setup
    training = replace(cfg.training, precision="bf16-mixed", gradient_clip_val=CLIP)
    norms, dtypes, _ = _fit(setup, training)
    assert torch.bfloat16 in dtypes  # the forward ran under the plugin's autocast
    assert len(norms.before) > 10 and max(norms.before) > 2 * CLIP  # clipping had work to do
    assert max(norms.after) <= CLIP * (1 + 1e-3), max(norms.after)


def test_plain_precision_keeps_the_fast_path(setup) -> None:
    """Full precision without clipping steps the torch optimiser directly: Lightning's
    ``on_before_optimizer_step`` never runs, the layers compute in float32."""
    cfg, _, _ = setup
    norms, dtypes, _ = _fit(setup, cfg.training)
    assert norms.before == [] and set(dtypes) == {torch.float32}


def test_clipping_by_value(setup) -> None:
    cfg, _, _ = setup
    training = replace(cfg.training, gradient_clip_val=1e-3, gradient_clip_algorithm="value")
    norms, _, n_params = _fit(setup, training)
    assert max(norms.after) <= 1e-3 * n_params**0.5 * (1 + 1e-6)


def test_member_trains_in_bf16_with_clipping(setup) -> None:
    cfg, model, samples = setup
    training = replace(cfg.training, precision="bf16-mixed", gradient_clip_val=1.0)
    _, history = train_lre_member(samples, model.processes, cfg.estimator, training, seed=1, log=lambda _: None)
    for proc, epochs in history.items():
        assert len(epochs) == 2 and all(0 < e["train_loss"] < 0.7 for e in epochs), (proc, epochs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU where there is none")
def test_gpu_without_gpu_is_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        accelerator_for(TrainingConfig(accelerator="gpu"))
    assert str(err.value).startswith("config key 'training.accelerator' = 'gpu': no GPU is visible")
    with pytest.raises(ConfigError, match="'training.precision' = '16-mixed': float16 mixed precision needs a GPU"):
        accelerator_for(TrainingConfig(accelerator="auto", precision="16-mixed"))
    assert accelerator_for(TrainingConfig(accelerator="auto")) == "cpu"


@pytest.mark.parametrize(("override", "message"), [
    ("training.precision=fp8", ("config key 'training.precision' = 'fp8': expected one of ('32', 'bf16-mixed', "
                                "'16-mixed')")),
    ("training.precision=16-mixed", ("config key 'training.precision' = '16-mixed': expected 32 or bf16-mixed with "
                                     "training.accelerator cpu")),
    ("training.accelerator=tpu", "config key 'training.accelerator' = 'tpu': expected one of ('cpu', 'gpu', 'auto')"),
    ("training.gradient_clip_val=-1", "config key 'training.gradient_clip_val' = -1.0: expected a number >= 0"),
    ("training.gradient_clip_algorithm=max", ("config key 'training.gradient_clip_algorithm' = 'max': expected one "
                                              "of ('norm', 'value')")),
])
def test_bad_training_keys_are_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("default", [override])
    assert message in str(err.value) and "\n" not in str(err.value)

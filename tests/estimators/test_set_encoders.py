"""Set encoders and set estimators: permutation invariance, masking, set size, bad input."""

import numpy as np
import pytest
import torch

from hsbi.estimators.npe import SetNPE, load_npe, save_npe
from hsbi.estimators.set_ratio import SetRatioNet, load_set_ratio, pair_loss, save_set_ratio
from hsbi.estimators.sets import DeepSet, SetTransformer, check_sets, pad_sets, set_mask
from hsbi.exceptions import DataError

ENCODERS = {
    "deepset": lambda: DeepSet(2, [16, 16], latent=8, summary=5, size_scale=10.0),
    "transformer": lambda: SetTransformer(2, [16], width=8, heads=2, blocks=2, summary=5, size_scale=10.0),
}


def _batch(seed=0, lengths=(7, 3, 5), n_max=9, d=2):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), n_max, d, generator=gen)
    lengths = torch.tensor(lengths)
    return x, set_mask(lengths, n_max), lengths


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request):
    torch.manual_seed(1)
    return ENCODERS[request.param]().eval()


def test_permutation_invariance(encoder):
    x, mask, lengths = _batch()
    out = encoder(x, mask)
    perm = x.clone()
    for b, n in enumerate(lengths.tolist()):
        perm[b, :n] = x[b, torch.randperm(n)]
    assert out.shape == (3, 5)
    torch.testing.assert_close(encoder(perm, mask), out, rtol=1e-5, atol=1e-6)


def test_padding_changes_nothing(encoder):
    x, mask, _ = _batch()
    garbage = torch.where(mask[..., None], x, torch.full_like(x, 1e3))
    torch.testing.assert_close(encoder(garbage, mask), encoder(x, mask), rtol=1e-5, atol=1e-6)
    longer = torch.cat([x, torch.randn(3, 4, 2)], dim=1)  # more padding, same sets
    torch.testing.assert_close(encoder(longer, torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1)),
                               encoder(x, mask), rtol=1e-5, atol=1e-6)


def test_set_size_is_a_feature(encoder):
    """A set and the same events twice differ only in size: the summaries must differ."""
    x, mask, lengths = _batch(lengths=(4, 4, 4), n_max=8)
    twice = torch.cat([x[:, :4], x[:, :4]], dim=1)
    assert not torch.allclose(encoder(twice, set_mask(torch.full((3,), 8), 8)), encoder(x, mask))


def test_pad_sets_and_bad_sets():
    events = np.arange(6, dtype=float)[:, None]
    padded = pad_sets(events, np.array([2, 0, 4]))
    assert padded.shape == (3, 4, 1) and padded[2, :, 0].tolist() == [2, 3, 4, 5] and not padded[1].any()
    with pytest.raises(DataError, match="set 1 is empty"):
        check_sets(np.array([2, 0, 4]), None)
    with pytest.raises(DataError, match="more than the largest set size the estimator was trained on"):
        check_sets(np.array([2, 11]), 10)
    with pytest.raises(DataError, match="no sets given"):
        check_sets(np.array([], dtype=int), 10)


def _ratio():
    torch.manual_seed(0)
    return SetRatioNet(1, [16, 16], [(0.0, 10.0), (0.5, 1.5)], ["mu", "nu"], max_set_size=50).eval()


def test_set_ratio_structure_and_masking():
    net = _ratio()
    x, mask, lengths = _batch(d=1, n_max=9)
    theta = torch.tensor([[[5.0, 1.0], [6.0, 1.2]]]).expand(3, -1, -1)
    s = net(x, mask, theta)
    assert s.shape == (3, 2)
    garbage = torch.where(mask[..., None], x, torch.full_like(x, -50.0))
    torch.testing.assert_close(net(garbage, mask, theta), s)
    # a sum over events: the set's value is the sum of per-event terms plus the size term
    one = net.log_likelihood(x[0, :7].numpy(), np.array([[5.0, 1.0]]))
    torch.testing.assert_close(torch.tensor(one[0], dtype=torch.float32), s[0, 0], rtol=1e-5, atol=1e-5)
    loss = pair_loss(net.train(), x, mask, theta[:, 0], theta[:, 1])
    loss.backward()
    assert loss.ndim == 0 and net.g[0].weight.grad is not None


def test_set_ratio_bad_input(tmp_path):
    net = _ratio()
    with pytest.raises(DataError, match=r"nu = 2, outside the range it was trained on \[0.5, 1.5\]"):
        net.log_likelihood(np.zeros((5, 1)), np.array([[5.0, 2.0]]))
    with pytest.raises(DataError, match="set 0 is empty"):
        net.log_likelihood(np.zeros((0, 1)), np.array([[5.0, 1.0]]))
    with pytest.raises(DataError, match="51 events, more than the largest set size"):
        net.log_likelihood(np.zeros((51, 1)), np.array([[5.0, 1.0]]))
    save_set_ratio(tmp_path, net)
    again = load_set_ratio(tmp_path)
    theta = np.array([[5.0, 1.0], [3.0, 0.7]])
    np.testing.assert_array_equal(again.log_likelihood(np.ones((4, 1)), theta),
                                  net.log_likelihood(np.ones((4, 1)), theta))


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_npe_contract(kind, tmp_path):
    torch.manual_seed(2)
    enc = ENCODERS[kind]().hparams
    npe = SetNPE(enc, [(0.0, 1.0)], ["f"], widths=[16], transforms=1, max_set_size=10).eval()
    events, lengths = np.random.default_rng(0).normal(size=(12, 2)), np.array([5, 7])
    grid = np.linspace(0.0005, 0.9995, 2000)
    logp = npe.log_posterior(events, lengths, grid[:, None])
    assert logp.shape == (2, 2000)
    # normalised in theta (the logit Jacobian included)
    np.testing.assert_allclose(np.trapezoid(np.exp(logp), grid, axis=1), 1.0, atol=5e-3)
    draws = npe.sample(events, lengths, 50)
    assert draws.shape == (2, 50, 1) and ((draws > 0) & (draws < 1)).all()
    save_npe(tmp_path, npe)
    np.testing.assert_array_equal(load_npe(tmp_path).log_posterior(events, lengths, grid[:5, None]), logp[:, :5])
    with pytest.raises(DataError, match=r"f = 1\.5, outside the prior's support \(0, 1\)"):
        npe.log_posterior(events, lengths, np.array([[1.5]]))
    with pytest.raises(DataError, match="set 1 is empty"):
        npe.log_posterior(events, np.array([12, 0]), np.array([[0.5]]))
    with pytest.raises(DataError, match="12 events, more than the largest set size .* \\(10\\)"):
        npe.log_posterior(events, np.array([12]), np.array([[0.5]]))

"""The leaderboard's defences (issue 31): each layer and model against a hand computation on a tiny input, each BPDA
surrogate's forward exact, and the unsupervised learning rules against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hahrobust.data import ImageSet
from hahrobust.models import build
from hahrobust.models.sparse_coding import learn_dictionary
from hahrobust.nn.competition import LocalWinnerTakeAll, TopMagnitudeQuantize, Triangle
from hahrobust.nn.softhebb import softhebb_delta
from hahrobust.nn.surrogate import BPDA, Surrogate, smooth_twin, surrogate_gradients


def test_lwta_keeps_each_groups_winner_by_hand() -> None:
    # one image, 4 channels (groups {0, 1} and {2, 3}), 2 locations
    z = torch.tensor([[[[1.0, -3.0]], [[2.0, -1.0]], [[-0.5, 4.0]], [[-0.7, 4.0]]]])
    expected = torch.tensor([[[[0.0, 0.0]], [[2.0, -1.0]], [[-0.5, 4.0]], [[0.0, 4.0]]]])  # a tie keeps both
    assert torch.equal(LocalWinnerTakeAll(2)(z), expected)


def test_lwta_groups_of_three_and_bad_sizes() -> None:
    z = torch.tensor([3.0, 1.0, 2.0, 0.0, 5.0, -1.0]).reshape(1, 6, 1, 1)
    assert LocalWinnerTakeAll(3)(z).flatten().tolist() == [3.0, 0.0, 0.0, 0.0, 5.0, 0.0]
    with pytest.raises(ValueError, match="do not split"):
        LocalWinnerTakeAll(4)(z)
    with pytest.raises(ValueError, match="at least 2"):
        LocalWinnerTakeAll(1)


def test_top_magnitude_quantize_by_hand() -> None:
    c = torch.tensor([0.5, -2.0, 1.0, -0.1]).reshape(1, 4, 1, 1)
    assert TopMagnitudeQuantize(2)(c).flatten().tolist() == [0.0, -1.0, 1.0, 0.0]
    assert TopMagnitudeQuantize(9)(c).flatten().tolist() == [1.0, -1.0, 1.0, -1.0]  # keep ≥ atoms: every sign


def test_triangle_by_hand() -> None:
    u = torch.tensor([1.0, 2.0, 6.0]).reshape(1, 3, 1, 1)  # mean 3: v = (−2, −1, 3)
    assert torch.allclose(Triangle(0.7)(u).flatten(), torch.tensor([0.0, 0.0, 3.0 ** 0.7]))


LAYERS = {
    "lwta": (LocalWinnerTakeAll(2), (2, 6, 3, 3)),
    "top-magnitude": (TopMagnitudeQuantize(3), (2, 8, 3, 3)),
    "triangle": (Triangle(0.7), (2, 5, 3, 3)),
}


@pytest.mark.parametrize("kind", ["sigmoid", "identity"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_surrogate_forward_is_exact_and_backward_is_not_zero(name: str, kind: str) -> None:
    layer, shape = LAYERS[name]
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    exact = layer(z)
    with surrogate_gradients(layer, Surrogate(kind)):
        through = layer(z)
    assert torch.equal(through, exact)
    (grad,) = torch.autograd.grad(through.square().sum(), z)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_sign_quantization_hides_every_gradient_without_bpda() -> None:
    c = torch.randn(2, 8, 3, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(TopMagnitudeQuantize(3)(c).sum(), c)
    assert torch.count_nonzero(grad) == 0  # what plain-gradient attacks see of the sparse-coding frontend


def test_softhebb_delta_by_hand() -> None:
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    # patch 1: u = (2, 0), y = softmax → (e²/(e²+1), 1/(e²+1)); patch 2: u = (0, 1), y = (1/(1+e), e/(1+e))
    a, b = math.exp(2) / (math.exp(2) + 1), math.exp(1) / (1 + math.exp(1))
    y = torch.tensor([[a, 1 - a], [1 - b, b]])
    u = x @ w.T
    delta = y.T @ x - (y * u).sum(0)[:, None] * w
    assert torch.allclose(softhebb_delta(w, x, 1.0), delta / delta.abs().max())


def test_dictionary_learning_finds_the_directions_of_the_patches() -> None:
    directions = torch.eye(6)[:3]
    signs = torch.tensor([1.0, -1.0]).repeat(30)[:, None]
    patches = torch.cat([signs * d * s for d in directions for s in (1.0, 2.5)])
    atoms, fit = learn_dictionary(patches, 3, rounds=5, seed=0)
    assert fit == pytest.approx(1.0)  # every patch is one atom exactly
    assert torch.allclose((atoms @ directions.T).abs().sort(dim=1).values[:, -1], torch.ones(3))


def _tiny_images() -> ImageSet:
    g = torch.Generator().manual_seed(1)
    return ImageSet(torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(24) % 10, "tiny")


def test_sparse_coding_forward_by_hand() -> None:
    model = build("sparse-coding-vgg16", width=0.125, atoms=12, keep=3, dictionary_patches=300).eval()
    model.fit_unsupervised(_tiny_images(), seed=0, device=torch.device("cpu"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    coefficients = F.conv2d((x - model.normalize.mean) / model.normalize.std, model.dictionary, stride=2)
    tau = coefficients.abs().sort(dim=1, descending=True).values[:, 2:3]
    code = torch.sign(coefficients) * (coefficients.abs() >= tau)
    image = F.conv_transpose2d(code, model.decoder.weight, stride=2)
    assert image.shape == x.shape
    assert torch.allclose(model(x), model.backbone(image), atol=1e-6)
    with torch.no_grad():
        assert torch.equal(BPDA(model)(x), model(x))


def test_softhebb_forward_by_hand() -> None:
    model = build("softhebb", width=0.05).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    h = (x - model.normalize.mean) / model.normalize.std
    for layer, power in zip(model.layers, (0.7, 1.4, 1.4)):
        n = layer.norm
        h = (h - n.running_mean[None, :, None, None]) / torch.sqrt(n.running_var[None, :, None, None] + n.eps)
        u = F.conv2d(h, layer.conv.weight, padding=layer.conv.padding)
        h = layer.pool(F.relu(u - u.mean(dim=1, keepdim=True)) ** power)
    expected = h.flatten(1) @ model.classifier.weight.T + model.classifier.bias
    assert torch.allclose(model(x), expected, atol=1e-5)
    with torch.no_grad():
        assert torch.equal(BPDA(model)(x), model(x))
        assert torch.isfinite(smooth_twin(model)(x)).all()


def test_softhebb_learns_without_labels_deterministically() -> None:
    data = _tiny_images()
    shuffled = ImageSet(data.images, data.labels.flip(0), data.source)  # other labels: the same Hebbian phase
    torch.manual_seed(0)
    a = build("softhebb", width=0.05)
    torch.manual_seed(0)
    b = build("softhebb", width=0.05)
    before = a.layers[0].conv.weight.clone()
    a.fit_unsupervised(data, seed=4, device=torch.device("cpu"))
    b.fit_unsupervised(shuffled, seed=4, device=torch.device("cpu"))
    assert not torch.equal(a.layers[0].conv.weight, before)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_lwta_vgg_uses_lwta_in_every_block() -> None:
    model = build("lwta-vgg16", width=0.125)
    assert sum(isinstance(m, LocalWinnerTakeAll) for m in model.modules()) == 13

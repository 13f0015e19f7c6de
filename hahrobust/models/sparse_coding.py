"""The sparse-coding frontend (Bakiskan, Cekic, Sezer & Madhow 2021, arXiv 2104.05353), in front of the small VGG-16.

The HaH group's earlier defence: an encoder correlates each 4×4 patch (stride 2) of the image with an overcomplete
dictionary of unit-norm atoms, keeps per patch the T coefficients of largest magnitude and quantizes them to their
sign; a decoder (a transposed convolution, initialised with the dictionary and trained with the network) turns the
sparse ternary code back into a 32×32 image for an ordinary CNN. Attacks that follow plain gradients see nothing
through it (the quantization's gradient is 0), so only BPDA measures it (:class:`~hahrobust.nn.competition.TopMagnitudeQuantize`).

Where this differs from the paper, and why: the dictionary is learned by spherical k-means on patches (Coates & Ng
2011; :func:`learn_dictionary`: one well-defined, seeded, minutes-free method) instead of the paper's sparse-coding
dictionary learning; the CNN behind it is the leaderboard's width-¼ VGG-16, not their ResNet; 500 atoms (≈ 10× the
48 dimensions of a patch) and T = 15 are the settings as we recall them from the paper, which cannot be consulted
from this offline machine; the dictionary is frozen after it is learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hahrobust.data import ImageSet
from hahrobust.models.base import HahrobustModel, InputNormalization
from hahrobust.models.vgg import VGG, VGGConfig
from hahrobust.nn.competition import TopMagnitudeQuantize
from hahrobust.seeding import derived_seed


@dataclass(frozen=True)
class SparseCodingConfig:
    atoms: int = 500  # dictionary size: overcomplete, ≈ 10× a 4×4×3 patch's 48 dimensions
    keep: int = 15  # coefficients kept per patch (top-T by magnitude), then quantized to ±1
    patch: int = 4
    stride: int = 2
    width: float = 0.25  # the VGG-16 behind the frontend (as the other leaderboard models)
    num_classes: int = 10
    # dictionary learning: spherical k-means on this many random patches of the training images, this many rounds
    dictionary_patches: int = 50_000
    dictionary_rounds: int = 10
    hah_loss: bool = False  # (no HaH block; read by HahrobustModel.loss_weights)

    def __post_init__(self) -> None:
        if self.atoms < 1 or not 1 <= self.keep <= self.atoms:
            raise ValueError(f"the code keeps 1 to {self.atoms} of the atoms per patch, got keep={self.keep}")
        if (32 - self.patch) % self.stride:
            raise ValueError(f"patches of {self.patch} at stride {self.stride} do not tile a 32×32 image")

    @property
    def positions(self) -> int:
        """Patch positions along each side of a 32×32 image (the code's H' = W')."""
        return (32 - self.patch) // self.stride + 1


class SparseCodingNet(HahrobustModel):
    def __init__(self, config: SparseCodingConfig) -> None:
        super().__init__()
        self.config = config
        self.normalize = InputNormalization()
        atoms = torch.randn(config.atoms, 3, config.patch, config.patch)
        self.register_buffer("dictionary", atoms / atoms.flatten(1).norm(dim=1)[:, None, None, None])
        self.code = TopMagnitudeQuantize(config.keep)
        self.decoder = nn.ConvTranspose2d(config.atoms, 3, config.patch, stride=config.stride, bias=False)
        self.backbone = VGG(VGGConfig(arch="vgg16", width=config.width, num_classes=config.num_classes, hah_loss=False))

    def block_names(self) -> list[str]:
        return [f"backbone.{name}" for name in self.backbone.block_names()]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The dictionary coefficients of every patch: [B, atoms, H', W'], stored atoms-last (each patch's
        coefficients contiguous), so the code's per-patch selection sorts rows without a transposing copy."""
        c = self.config
        patches = F.unfold(self.normalize(x), c.patch, stride=c.stride)  # [B, 3·patch², H'·W']
        coefficients = patches.transpose(1, 2) @ self.dictionary.flatten(1).T  # [B, H'·W', atoms]
        return coefficients.view(len(x), c.positions, c.positions, c.atoms).permute(0, 3, 1, 2)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The decoder (a transposed convolution) as one matrix product and a fold: what ``self.decoder`` computes."""
        c = self.config
        rows = code.permute(0, 2, 3, 1).reshape(len(code), -1, c.atoms)  # a view of an atoms-last code
        columns = (rows @ self.decoder.weight.flatten(1)).transpose(1, 2)  # [B, 3·patch², H'·W']
        return F.fold(columns, (32, 32), c.patch, stride=c.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.decode(self.code(self.encode(x))))

    def fit_unsupervised(self, data: ImageSet, *, seed: int, device: torch.device) -> dict[str, float]:
        """Learn the dictionary from ``data``'s patches and start the decoder from it (its transpose reconstructs)."""
        patches = sample_patches(data, self.config, seed)
        dictionary, fit = learn_dictionary(patches, self.config.atoms, self.config.dictionary_rounds, seed)
        shaped = dictionary.reshape(self.dictionary.shape)
        with torch.no_grad():
            self.dictionary.copy_(shaped)
            self.decoder.weight.copy_(shaped / self.config.keep)
        return {"dictionary_fit": fit}


def sample_patches(data: ImageSet, config: SparseCodingConfig, seed: int) -> torch.Tensor:
    """``config.dictionary_patches`` random normalized patches [P, 3·patch²] of ``data``, drawn from the seed."""
    generator = torch.Generator().manual_seed(derived_seed("dictionary-patches", seed))
    n = config.dictionary_patches
    chosen = torch.randint(len(data), (n,), generator=generator)
    top = torch.randint(0, config.positions, (n,), generator=generator) * config.stride
    left = torch.randint(0, config.positions, (n,), generator=generator) * config.stride
    rows = torch.arange(config.patch)
    ys = (top[:, None] + rows[None, :])[:, None, :, None]
    xs = (left[:, None] + rows[None, :])[:, None, None, :]
    pixels = data.images.cpu()[chosen[:, None, None, None], torch.arange(3)[None, :, None, None], ys, xs]
    return InputNormalization()(pixels.float() / 255.0).flatten(1)


def learn_dictionary(patches: torch.Tensor, atoms: int, rounds: int, seed: int) -> tuple[torch.Tensor, float]:
    """Spherical k-means (Coates & Ng 2011): unit-norm atoms, each the normalized sum of the patches (signed by their
    coefficient) whose largest-magnitude coefficient is its own. An atom left with no patch restarts at a random patch.
    Returns the atoms [atoms, D] and the mean |coefficient| of each patch's best atom divided by the patch's norm
    (1.0: every patch is one atom exactly)."""
    generator = torch.Generator().manual_seed(derived_seed("dictionary", seed))
    unit = patches / patches.norm(dim=1, keepdim=True).clamp_min(1e-12)
    dictionary = unit[torch.randperm(len(unit), generator=generator)[:atoms]].clone()
    for _ in range(rounds):
        coefficients = unit @ dictionary.T
        best = coefficients.abs().argmax(dim=1)
        signed = coefficients.gather(1, best[:, None])
        sums = torch.zeros_like(dictionary).index_add_(0, best, signed * unit)
        norms = sums.norm(dim=1, keepdim=True)
        empty = norms.squeeze(1) < 1e-12
        restart = unit[torch.randint(len(unit), (int(empty.sum()),), generator=generator)]
        dictionary = torch.where(empty[:, None], torch.zeros_like(sums), sums / norms.clamp_min(1e-12))
        dictionary[empty] = restart
    fit = (unit @ dictionary.T).abs().amax(dim=1).mean().item()
    return dictionary, fit


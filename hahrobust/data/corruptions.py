"""The common corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), generated per image and seed.

Each corruption is Hendrycks' CIFAR generator, ``make_cifar_c.py`` in github.com/hendrycks/robustness
(ImageNet-C/create_c/, commit ca36008), ported with its **CIFAR** parameters (:data:`CIFAR_PARAMETERS`; the
ImageNet-C parameters that libraries such as ``imagecorruptions`` hard-code are for 224-pixel images and far too
strong at 32 pixels). The building blocks come from maintained libraries, as in the original:
``imagecorruptions-imaug`` (the maintained fork of Michaelis et al.'s ``imagecorruptions``) for the frost
textures, the defocus disk kernel, the fog's plasma fractal and the motion-blur kernel (a NumPy re-implementation
of ImageMagick's ``MotionBlurImage``, which the original called through Wand); scikit-image, SciPy, OpenCV and
Pillow for the rest, each called as the original calls it.

Where the port departs from the original, and why (each also noted at the function):

- Randomness: every image draws from its own ``numpy.random.Generator`` seeded by (seed, corruption, severity,
  image index) (:func:`corruption_rng`), so an image's corruption never depends on batch size, process count or
  order. The official files were drawn from NumPy's global RNG in one pass, so the draws (not their
  distributions) differ: a generated set is *a* CIFAR-10-C, not *the* CIFAR-10-C (``--corruptions-dir`` reads
  the official files).
- Motion blur and snow: the original decoded ImageMagick's 8-bit PNG output; the NumPy kernel returns floats,
  which are brought to 8 bits the way ImageMagick does it (:func:`_motion_blur`).
- Spatter: where the original would divide 0 by 0 (no liquid pixel survives the threshold, a probability
  below 1e-9 per image) it would write NaN; here no spatter is added.

Every corruption maps a uint8 [32, 32, 3] RGB image to floats in [0, 255] that are truncated to uint8, as the
original's ``np.uint8(corruption(image))`` does.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any

import numpy as np

from hahrobust.errors import HahrobustError
from hahrobust.seeding import derived_seed, numpy_global_seed

IMAGE_SIZE = 32  # the CIFAR parameters below are for 32 × 32 images only
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# ------------------------------------------------------------------------------------------- hyperparameters

#: The five parameter sets (severity 1…5) of every corruption: ``make_cifar_c.py`` (hendrycks/robustness,
#: ImageNet-C/create_c/make_cifar_c.py at commit ca36008), each corruption function's ``c = [...]`` list,
#: copied verbatim. Tuple fields are named in the comments, in the original's order.
CIFAR_PARAMETERS: dict[str, tuple[Any, ...]] = {
    # --- noise
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of additive N(0, c) on [0, 1] pixels
    "shot_noise": (500, 250, 100, 75, 50),  # Poisson photon count per unit intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # salt-and-pepper fraction of values
    # --- blur
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # (disk radius, alias blur σ)
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # (σ, max shift, passes)
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # (ImageMagick radius, σ); angle U(−45°, 45°)
    "zoom_blur": (  # zoom factors averaged with the image (np.arange as written: 1.00 … 1.06 at severity 1)
        np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.01),
        np.arange(1, 1.26, 0.01),
    ),
    # --- weather
    "snow": (  # (flake mean, flake std, zoom, threshold, blur radius, blur σ, image weight); angle U(−135°, −45°)
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # (image weight, frost weight)
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # (fog strength, plasma wibble decay)
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    # --- digital
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the deviation from the per-channel mean
    "elastic_transform": (  # (displacement α, smoothing σ, affine jitter), all × IMSIZE = 32
        (32 * 0, 32 * 0, 32 * 0.08),
        (32 * 0.05, 32 * 0.2, 32 * 0.07),
        (32 * 0.08, 32 * 0.06, 32 * 0.06),
        (32 * 0.1, 32 * 0.04, 32 * 0.05),
        (32 * 0.1, 32 * 0.03, 32 * 0.03),
    ),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # box-downsampling factor
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
    # --- the four extra (validation) corruptions
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),  # std of multiplicative N(0, c)
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),  # Gaussian σ in pixels
    "spatter": (  # (liquid mean, liquid std, smoothing σ, threshold, intensity or mud σ, 0 water / 1 mud)
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # (factor, offset) on HSV saturation
}

#: The benchmark's groups (Hendrycks & Dietterich, Fig. 1) and the four extra corruptions of the same release.
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
#: The 15 corruptions of CIFAR-10-C's benchmark, in the paper's order (also the official file names).
BENCHMARK: tuple[str, ...] = tuple(name for family in ("noise", "blur", "weather", "digital") for name in FAMILIES[family])
#: All 19, benchmark first.
CORRUPTION_NAMES: tuple[str, ...] = (*BENCHMARK, *FAMILIES["extra"])
#: ``--corruptions`` group names: ``all`` is the benchmark's 15 (the extra four are asked for by name or ``extra``).
GROUPS: dict[str, tuple[str, ...]] = {"all": BENCHMARK, **FAMILIES}


def family_of(name: str) -> str:
    return next(family for family, members in FAMILIES.items() if name in members)


# ---------------------------------------------------------------------------------------------- parsing


def parse_corruptions(spec: str) -> tuple[str, ...]:
    """Corruption names from a comma-separated list of names and groups (:data:`GROUPS`), in benchmark order."""
    chosen: set[str] = set()
    tokens = [token.strip() for token in spec.split(",") if token.strip()]
    if not tokens:
        raise HahrobustError("--corruptions is empty; give corruption names or a group (all, noise, blur, …)")
    for token in tokens:
        if token in GROUPS:
            chosen.update(GROUPS[token])
        elif token in CIFAR_PARAMETERS:
            chosen.add(token)
        else:
            raise HahrobustError(
                f"unknown corruption {token!r}; choose groups ({', '.join(GROUPS)}) or names ({', '.join(CORRUPTION_NAMES)})"
            )
    return tuple(name for name in CORRUPTION_NAMES if name in chosen)


def parse_severities(spec: str) -> tuple[int, ...]:
    """Severities from ``"1-5"``, ``"3"`` or ``"1,3,5"`` (ranges allowed in a list), ascending, each in 1–5."""
    chosen: set[int] = set()
    tokens = [token.strip() for token in spec.split(",") if token.strip()]
    for token in tokens:
        low, _, high = token.partition("-")
        try:
            bounds = (int(low), int(high) if high else int(low))
        except ValueError:
            raise HahrobustError(f"--severities must be numbers or ranges such as 1-5 or 1,3,5, got {spec!r}") from None
        for bound in bounds:
            if bound not in SEVERITIES:
                raise HahrobustError(f"--severities: severity {bound} is outside 1–5")
        if bounds[0] > bounds[1]:
            raise HahrobustError(f"--severities: range {token} runs backwards")
        chosen.update(range(bounds[0], bounds[1] + 1))
    if not chosen:
        raise HahrobustError("--severities is empty; give e.g. 1-5")
    return tuple(sorted(chosen))


# ----------------------------------------------------------------------------------------------- applying


def corruption_rng(seed: int, name: str, severity: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` (its position in the corrupted set) for one corruption and severity."""
    return np.random.default_rng(derived_seed("corruption", name, severity, seed, index))


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``image`` (uint8 [32, 32, 3] RGB) corrupted by ``name`` at ``severity`` (1–5), drawing from ``rng``."""
    if name not in CIFAR_PARAMETERS:
        raise HahrobustError(f"unknown corruption {name!r}")
    if severity not in SEVERITIES:
        raise HahrobustError(f"severity {severity} is outside 1–5")
    if image.dtype != np.uint8 or image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"expected a uint8 [32, 32, 3] image, got {image.dtype} {list(image.shape)}")
    out = _FUNCTIONS[name](image, CIFAR_PARAMETERS[name][severity - 1], rng)
    return np.asarray(out).astype(np.uint8)  # truncation, as the original's np.uint8(...)


#: What the generator imports from the optional extra ``corruptions``: import name → distribution.
GENERATOR_LIBRARIES = {"cv2": "opencv-python", "skimage": "scikit-image", "imagecorruptions": "imagecorruptions-imaug"}


def require_generator_libraries() -> None:
    """One line naming the extra to install when a library of the generator is absent (heavy, and optional)."""
    if missing := [d for module, d in GENERATOR_LIBRARIES.items() if importlib.util.find_spec(module) is None]:
        raise HahrobustError(f"generating CIFAR-10-C needs {', '.join(missing)}: pip install \"hahrobust[corruptions]\" "
                             "(or read the official CIFAR-10-C files with --corruptions-dir)")


def corrupt_images(
    images: np.ndarray, indices: Sequence[int], name: str, severity: int, seed: int,
    progress: Callable[[], None] | None = None,
) -> np.ndarray:
    """Corrupt uint8 [N, 32, 32, 3] ``images`` whose positions in the evaluated set are ``indices``;
    ``progress()`` is called after each image."""
    require_generator_libraries()
    out = np.empty_like(images)
    for row, (image, index) in enumerate(zip(images, indices)):
        out[row] = corrupt(image, name, severity, corruption_rng(seed, name, severity, int(index)))
        if progress is not None:
            progress()
    return out


# ------------------------------------------------------------------------------------------------- helpers


def _gaussian(image: np.ndarray, sigma: float, **kwargs: Any) -> np.ndarray:
    """scikit-image's Gaussian filter, per channel for colour images (the original's ``multichannel=True``)."""
    from skimage.filters import gaussian

    return gaussian(image, sigma=sigma, channel_axis=-1 if image.ndim == 3 else None, **kwargs)


def _clipped_zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the centre by ``factor`` and crop back to the input size: the CIFAR generator's own version
    (imagecorruptions' crops the top-left corner of the zoomed image instead of its centre)."""
    from scipy.ndimage import zoom

    size = image.shape[0]
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = zoom(image[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
    trim = (zoomed.shape[0] - size) // 2
    return zoomed[trim : trim + size, trim : trim + size]


def _motion_blur(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur (imagecorruptions' NumPy port), brought to 8 bits as ImageMagick brings it.

    Checked against ImageMagick 6.9.11 (Q16) through Wand, as the original calls it, on 100 CIFAR-10 test
    images at every CIFAR (radius, σ): ImageMagick's 8-bit output equals ``floor(port + 1e-4)`` for 99.6–99.8 %
    of values and is never more than 1 apart (the 1e-4 absorbs the port's float32 rounding)."""
    from imagecorruptions.corruptions import _motion_blur as blur

    return np.clip(np.floor(blur(image, radius=radius, sigma=sigma, angle=angle) + 1e-4), 0, 255)


@functools.lru_cache(maxsize=1)
def _frost_textures() -> tuple[np.ndarray, ...]:
    """The frost photographs shipped with imagecorruptions, BGR as cv2 reads them, scaled by 0.2 as the CIFAR
    generator scales them. Only the first five: the original draws ``np.random.randint(5)`` over six files."""
    import importlib.resources

    import cv2

    textures = []
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"):
        with importlib.resources.as_file(importlib.resources.files("imagecorruptions") / "frost" / name) as path:
            texture = cv2.imread(str(path))
        if texture is None:
            raise HahrobustError(f"cannot read the frost texture {name} of the imagecorruptions package")
        textures.append(cv2.resize(texture, (0, 0), fx=0.2, fy=0.2))
    return tuple(textures)


# ------------------------------------------------------------------------------------------- corruptions
# Each: (uint8 [32, 32, 3] RGB image, this severity's parameters, generator) -> floats in [0, 255].


def gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = x / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    from skimage.util import random_noise

    return np.clip(random_noise(x / 255.0, mode="s&p", amount=c, rng=rng), 0, 1) * 255


def speckle_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = x / 255.0
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1) * 255


def gaussian_blur(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(_gaussian(x / 255.0, c), 0, 1) * 255


def glass_blur(x: np.ndarray, c: tuple[float, int, int], rng: np.random.Generator) -> np.ndarray:
    sigma, max_delta, passes = c
    x = np.uint8(_gaussian(x / 255.0, sigma) * 255)
    positions = range(IMAGE_SIZE - max_delta, max_delta, -1)
    shifts = rng.integers(-max_delta, max_delta, size=(passes, len(positions), len(positions), 2))
    for p in range(passes):
        for i, h in enumerate(positions):
            for j, w in enumerate(positions):
                dx, dy = shifts[p, i, j]
                h_prime, w_prime = h + dy, w + dx
                # The original's "swap", kept as written: with NumPy views it copies the neighbour's pixel
                # into (h, w) and leaves the neighbour unchanged.
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(_gaussian(x / 255.0, sigma), 0, 1) * 255


def defocus_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    import cv2
    from imagecorruptions.corruptions import disk

    x = x / 255.0
    kernel = disk(radius=c[0], alias_blur=c[1])
    channels = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], axis=-1)
    return np.clip(channels, 0, 1) * 255


def motion_blur(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    return _motion_blur(x, c[0], c[1], rng.uniform(-45, 45))


def zoom_blur(x: np.ndarray, c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = (x / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for factor in c:
        out += _clipped_zoom(x, factor)
    return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def snow(x: np.ndarray, c: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    import cv2

    x = np.array(x, dtype=np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = _clipped_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)  # the original's 8-bit grey PNG
    layer = _motion_blur(layer, c[4], c[5], rng.uniform(-135, -45))[..., np.newaxis] / 255.0
    grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(IMAGE_SIZE, IMAGE_SIZE, 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def frost(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    texture = _frost_textures()[rng.integers(5)]
    top = rng.integers(0, texture.shape[0] - IMAGE_SIZE)
    left = rng.integers(0, texture.shape[1] - IMAGE_SIZE)
    crop = texture[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE][..., [2, 1, 0]]  # BGR → RGB
    return np.clip(c[0] * np.asarray(x, dtype=np.float64) + c[1] * crop, 0, 255)


def fog(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    from imagecorruptions.corruptions import plasma_fractal

    x = x / 255.0
    max_val = x.max()
    with numpy_global_seed(int(rng.integers(2**32))):  # plasma_fractal draws from NumPy's global RNG
        fractal = plasma_fractal(mapsize=IMAGE_SIZE, wibbledecay=c[1])
    x = x + c[0] * fractal[:IMAGE_SIZE, :IMAGE_SIZE][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def brightness(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    x = rgb2hsv(x / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(hsv2rgb(x), 0, 1) * 255


def saturate(x: np.ndarray, c: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    x = rgb2hsv(x / 255.0)
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(hsv2rgb(x), 0, 1) * 255


def contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    x = x / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def jpeg_compression(x: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=c)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    small = int(IMAGE_SIZE * c)
    image = Image.fromarray(x).resize((small, small), Image.BOX).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    return np.asarray(image)


def elastic_transform(x: np.ndarray, c: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """A random affine warp, then a smoothed random displacement field (the original's gist modification)."""
    import cv2
    from scipy.ndimage import map_coordinates

    image = np.array(x, dtype=np.float32) / 255.0
    shape = image.shape
    size = shape[:2]
    center = np.float32(size) // 2
    square = min(size) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    pts2 = pts1 + rng.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
    image = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts2), size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (_gaussian(rng.uniform(-1, 1, size=size), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    dy = (_gaussian(rng.uniform(-1, 1, size=size), c[1], mode="reflect", truncate=3) * c[0]).astype(np.float32)
    cols, rows, chans = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = (
        np.reshape(rows + dy[..., np.newaxis], (-1, 1)),
        np.reshape(cols + dx[..., np.newaxis], (-1, 1)),
        np.reshape(chans, (-1, 1)),
    )
    return np.clip(map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def spatter(x: np.ndarray, c: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Water drops (c[5] = 0) or mud (c[5] = 1) from a thresholded, smoothed random liquid layer."""
    import cv2

    x = np.array(x, dtype=np.float32) / 255.0
    liquid = _gaussian(rng.normal(size=x.shape[:2], loc=c[0], scale=c[1]), c[2])
    liquid[liquid < c[3]] = 0
    if c[5] == 0:
        liquid = (liquid * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = cv2.cvtColor(liquid * dist, cv2.COLOR_GRAY2BGRA)
        peak = np.max(m, axis=(0, 1))
        m = np.divide(m, peak, out=np.zeros_like(m), where=peak > 0) * c[4]  # 0/0: no drop at all, no spatter
        # "Pale turquoise" given in BGR order but added to the RGB image, as in the original.
        color = cv2.cvtColor(np.concatenate([np.full_like(m[..., :1], v / 255.0) for v in (175, 238, 238)], axis=2),
                             cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    mud = _gaussian(np.where(liquid > c[3], 1, 0).astype(np.float32), c[4])
    mud[mud < 0.8] = 0
    color = np.array([63, 42, 20], dtype=np.float32) / 255.0 * mud[..., np.newaxis]  # mud brown
    return np.clip(x * (1 - mud[..., np.newaxis]) + color, 0, 1) * 255


_FUNCTIONS: dict[str, Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]] = {
    name: globals()[name] for name in CORRUPTION_NAMES
}

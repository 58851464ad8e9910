"""Training augmentations in Pillow: the paper's rotation and flips, plus robustness transforms."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation; the paper preset uses only rotation and flips."""

    rotate_degrees: float = 10.0
    hflip: float = 0.5
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 95)
    rescale_prob: float = 0.0
    rescale: tuple[float, float] = (0.5, 1.0)
    crop_prob: float = 0.0
    crop_scale: tuple[float, float] = (0.7, 1.0)
    jitter: float = 0.0
    filter_prob: float = 0.0  # a photo editor's sharpening or a soft blur, half each
    mixed_resampling: bool = False  # shrink with any of the filters image tools use, not only bilinear
    gray_prob: float = 0.0  # a black-and-white copy (archive, news and art photos), either class
    noise_prob: float = 0.0  # Gaussian sensor noise of 2-8 grey levels (a phone photo in poor light)


PRESETS: dict[str, AugmentConfig] = {
    "paper": AugmentConfig(rotate_degrees=20.0, hflip=0.5),
    "robust": AugmentConfig(
        rotate_degrees=8.0,
        hflip=0.5,
        jpeg_prob=0.9,
        rescale_prob=0.3,
        crop_prob=0.5,
        jitter=0.1,
    ),
    "robust-light": AugmentConfig(
        rotate_degrees=5.0,
        hflip=0.5,
        jpeg_prob=0.6,
        jpeg_quality=(70, 98),
        rescale_prob=0.25,
        crop_prob=0.5,
        crop_scale=(0.8, 1.0),
        jitter=0.05,
    ),
    "robust-faces": AugmentConfig(
        rotate_degrees=5.0,
        hflip=0.5,
        jpeg_prob=0.6,
        jpeg_quality=(60, 98),
        rescale_prob=0.4,
        rescale=(0.4, 1.0),
        crop_prob=0.3,
        crop_scale=(0.8, 1.0),
        jitter=0.05,
    ),
    "none": AugmentConfig(rotate_degrees=0.0, hflip=0.0),
}


PRESETS["robust-reposted"] = replace(  # robust-faces with more re-posted copies: shrunk, re-encoded at q55-95
    PRESETS["robust-faces"], jpeg_prob=0.8, jpeg_quality=(55, 95), rescale_prob=0.6
)
PRESETS["robust-faces-still"] = replace(PRESETS["robust-faces"], rotate_degrees=0.0)  # no resampling by rotation
PRESETS["robust-edits"] = replace(PRESETS["robust-faces-still"], filter_prob=0.3)  # + sharpened or blurred copies
PRESETS["robust-edits-mixed"] = replace(PRESETS["robust-edits"], mixed_resampling=True)  # + Lanczos, bicubic, box
PRESETS["robust-edits-gray"] = replace(PRESETS["robust-edits-mixed"], gray_prob=0.1)  # + black-and-white copies
PRESETS["robust-edits-gray-noise"] = replace(PRESETS["robust-edits-gray"], noise_prob=0.1)  # + noisy copies


def reencode(image: Image.Image, quality: int, fmt: str = "JPEG") -> Image.Image:
    """Re-encode in `fmt` (JPEG, WEBP) at `quality` and decode again."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as reencoded:
        return reencoded.convert("RGB")


def downscale(image: Image.Image, factor: float, method: Image.Resampling = Image.Resampling.BILINEAR) -> Image.Image:
    """Shrink by `factor` (<1), as a re-posted or thumbnailed copy would be."""
    width, height = image.size
    new_size = (max(8, round(width * factor)), max(8, round(height * factor)))
    return image.resize(new_size, method)


def sharpen_or_blur(image: Image.Image, rng: random.Random) -> Image.Image:
    """An unsharp mask as phones and photo editors apply it, or a slight Gaussian blur, half the time each."""
    if rng.random() < 0.5:
        mask = ImageFilter.UnsharpMask(radius=rng.uniform(1.0, 2.5), percent=rng.randint(40, 120), threshold=2)
        return image.filter(mask)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))


def add_noise(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """Gaussian noise of `sigma` grey levels on every channel, as a phone adds in poor light."""
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + np.random.default_rng(seed).normal(0.0, sigma, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))


def colour_jitter(image: Image.Image, amount: float, rng: random.Random) -> Image.Image:
    """Brightness, contrast and saturation each scaled by a random factor in [1 - amount, 1 + amount]."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1 - amount, 1 + amount))
    return image


RESAMPLING = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS, Image.Resampling.BOX)


class Augmenter:
    """A random augmentation drawn from `config` on each call; seeded for reproducibility."""

    def __init__(self, config: AugmentConfig, seed: int) -> None:
        self.config = config
        self.rng = random.Random(seed)

    def __call__(self, image: Image.Image) -> Image.Image:
        """Return an augmented copy of an RGB image."""
        cfg, rng = self.config, self.rng
        if rng.random() < cfg.crop_prob:
            image = self._random_crop(image)
        if rng.random() < cfg.rescale_prob:
            factor = rng.uniform(*cfg.rescale)
            method = rng.choice(RESAMPLING) if cfg.mixed_resampling else Image.Resampling.BILINEAR
            image = downscale(image, factor, method)
        if cfg.rotate_degrees > 0:
            angle = rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees)
            image = image.rotate(angle, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
        if rng.random() < cfg.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if cfg.jitter > 0:
            image = colour_jitter(image, cfg.jitter, rng)
        if cfg.filter_prob > 0 and rng.random() < cfg.filter_prob:
            image = sharpen_or_blur(image, rng)
        if cfg.gray_prob > 0 and rng.random() < cfg.gray_prob:
            image = ImageOps.grayscale(image).convert("RGB")
        if cfg.noise_prob > 0 and rng.random() < cfg.noise_prob:
            image = add_noise(image, rng.uniform(2.0, 8.0), rng.getrandbits(32))
        if rng.random() < cfg.jpeg_prob:
            image = reencode(image, rng.randint(*cfg.jpeg_quality))
        return image

    def _random_crop(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        scale = self.rng.uniform(*self.config.crop_scale)
        crop_w, crop_h = max(8, int(width * scale)), max(8, int(height * scale))
        left = self.rng.randint(0, width - crop_w)
        top = self.rng.randint(0, height - crop_h)
        return image.crop((left, top, left + crop_w, top + crop_h))

"""Training-only augmentation, applied to the decoded photo before the shared preprocessing.

The labelled photos confound category with photo style (white-background car cutouts, catalogue
watches, sale-post bags), so the augmentations attack style, not content: other backgrounds behind
cutouts, objects shown small inside ordinary scenes (the watch at the edge of a selfie), crops,
colour, blur, resolution and JPEG quality.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

# A pixel is "studio white" when every channel is at least this bright.
WHITE_LEVEL = 235
# A photo counts as a cutout on white when this share of its border is studio white.
CUTOUT_BORDER_SHARE = 0.6


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.45, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    background_swap: float = 0.7  # for cutouts on white only
    paste_into_scene: float = 0.25
    paste_scale: tuple[float, float] = (0.35, 0.8)
    color_jitter: float = 0.8
    color_strength: float = 0.35
    grayscale: float = 0.05
    blur: float = 0.2
    blur_radius: tuple[float, float] = (0.3, 1.8)
    low_resolution: float = 0.2
    low_resolution_side: tuple[int, int] = (96, 200)
    jpeg: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 90)


def _random_crop(image: Image.Image, rng: random.Random, cfg: AugmentConfig) -> Image.Image:
    width, height = image.size
    area = width * height
    for _ in range(10):
        target_area = area * rng.uniform(*cfg.crop_scale)
        ratio = np.exp(rng.uniform(np.log(cfg.crop_ratio[0]), np.log(cfg.crop_ratio[1])))
        w = int(round(np.sqrt(target_area * ratio)))
        h = int(round(np.sqrt(target_area / ratio)))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.crop((left, top, left + w, top + h))
    return image


def _studio_white_mask(image: Image.Image) -> np.ndarray | None:
    """Mask of the white backdrop of a product cutout, or None if the photo is not one."""
    pixels = np.asarray(image)
    white = (pixels >= WHITE_LEVEL).all(axis=2)
    border = np.concatenate([white[0], white[-1], white[:, 0], white[:, -1]])
    if border.mean() < CUTOUT_BORDER_SHARE:
        return None
    return white


def _fit_background(background: Image.Image, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Cover ``size`` with a random crop of ``background``."""
    bw, bh = background.size
    scale = max(size[0] / bw, size[1] / bh)
    resized = background.resize((max(size[0], int(bw * scale + 1)), max(size[1], int(bh * scale + 1))))
    left = rng.randint(0, resized.width - size[0])
    top = rng.randint(0, resized.height - size[1])
    return resized.crop((left, top, left + size[0], top + size[1]))


def _swap_background(image: Image.Image, background: Image.Image, rng: random.Random) -> Image.Image:
    mask = _studio_white_mask(image)
    if mask is None:
        return image
    backdrop = _fit_background(background, image.size, rng)
    alpha = Image.fromarray((~mask).astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1))
    return Image.composite(image, backdrop, alpha)


def _paste_into_scene(image: Image.Image, scene: Image.Image, rng: random.Random, cfg: AugmentConfig) -> Image.Image:
    """Show the photo small, somewhere inside an ordinary scene of the same size."""
    canvas = _fit_background(scene, image.size, rng)
    scale = rng.uniform(*cfg.paste_scale)
    small = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    canvas.paste(small, (rng.randint(0, image.width - small.width), rng.randint(0, image.height - small.height)))
    return canvas


def _jitter_color(image: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1 - strength, 1 + strength))
    return image


def _recompress(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def augment(
    image: Image.Image,
    rng: random.Random,
    cfg: AugmentConfig,
    background: Image.Image | None = None,
) -> Image.Image:
    """One random training view of an RGB photo. ``background`` is an ordinary photo to use as a backdrop."""
    if background is not None and rng.random() < cfg.background_swap:
        image = _swap_background(image, background, rng)
    image = _random_crop(image, rng, cfg)
    if background is not None and rng.random() < cfg.paste_into_scene:
        image = _paste_into_scene(image, background, rng, cfg)
    if rng.random() < cfg.flip:
        image = ImageOps.mirror(image)
    if rng.random() < cfg.color_jitter:
        image = _jitter_color(image, rng, cfg.color_strength)
    if rng.random() < cfg.grayscale:
        image = ImageOps.grayscale(image).convert("RGB")
    if rng.random() < cfg.blur:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*cfg.blur_radius)))
    if rng.random() < cfg.low_resolution:
        side = rng.randint(*cfg.low_resolution_side)
        factor = side / max(image.size)
        if factor < 1:
            original = image.size
            image = image.resize((max(1, int(image.width * factor)), max(1, int(image.height * factor)))).resize(original)
    if rng.random() < cfg.jpeg:
        image = _recompress(image, rng.randint(*cfg.jpeg_quality))
    return image

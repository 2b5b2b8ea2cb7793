"""A procedural world of coloured shapes on grey backgrounds, with captions, generated from a seed.

Every image holds one object, or two objects in opposite cells of a 3×3 grid, drawn with antialiased
signed-distance functions on a plain or striped grey background; the caption names colour, shape and
cell of every object ("a red circle on the left and a blue square on the right"). Everything is
vectorized over the batch, so tens of thousands of 32×32 images take about a second on the CPU.

A scene is described by ``labels [B,9]``: per grid cell (row-major, top-left first) 0 for "no object
centred here" or ``1 + class`` with ``class = shape * len(COLOURS) + colour``. Captions may omit the
position of a single object ("a red circle"); such a caption matches that object in any cell.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
COLOUR_RGB = torch.tensor([[0.90, 0.15, 0.15], [0.15, 0.80, 0.20], [0.20, 0.30, 0.95], [0.95, 0.88, 0.15]])
CELL_PHRASES = (
    "in the top left", "at the top", "in the top right",
    "on the left", "in the centre", "on the right",
    "in the bottom left", "at the bottom", "in the bottom right",
)
NUM_CLASSES = len(SHAPES) * len(COLOURS)
NUM_CELLS = 9
IMAGE_SIZE = 32
CLASS_NAMES = tuple(f"{c} {s}" for s in SHAPES for c in COLOURS)
"""Class ``k`` is shape ``k // 4`` in colour ``k % 4`` ("red circle", "green circle", ...)."""

# Pairs of cells at grid distance 2 (opposite columns or rows) where two objects never overlap.
_FAR_PAIRS = torch.tensor(
    [(a, b) for a in range(9) for b in range(9)
     if a < b and max(abs(a // 3 - b // 3), abs(a % 3 - b % 3)) == 2]
)


def class_name(k: int) -> str:
    return CLASS_NAMES[k]


def object_phrase(k: int, cell: int | None) -> str:
    """``"a red circle on the left"`` (or ``"a red circle"`` when ``cell`` is None)."""
    text = f"a {COLOURS[k % len(COLOURS)]} {SHAPES[k // len(COLOURS)]}"
    return text if cell is None else f"{text} {CELL_PHRASES[cell]}"


def caption_for(labels: torch.Tensor, positioned: bool = True) -> str:
    """The caption of one scene ``labels [9]``; objects are named in cell order."""
    objects = [(int(v) - 1, c) for c, v in enumerate(labels.tolist()) if v > 0]
    return " and ".join(object_phrase(k, c if positioned else None) for k, c in objects)


@dataclass
class Scenes:
    """A batch of rendered scenes: ``images [B,3,H,W]`` in 0..1 and their ``labels [B,9]`` (see module doc)."""

    images: torch.Tensor
    labels: torch.Tensor


def shape_alpha(shape: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor,
                size: int = IMAGE_SIZE) -> torch.Tensor:
    """Antialiased coverage ``[B,1,H,W]`` of shapes ``[B]`` (index into SHAPES) centred at (cx, cy) in pixels.

    Each shape is a signed distance d (negative inside); coverage is ``clamp(0.5 - d, 0, 1)``.
    """
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = coords.view(1, 1, size) - cx.view(-1, 1, 1)
    dy = coords.view(1, size, 1) - cy.view(-1, 1, 1)
    r = radius.view(-1, 1, 1)
    ax, ay = dx.abs(), dy.abs()
    circle = torch.sqrt(dx * dx + dy * dy) - r
    square = torch.maximum(ax, ay) - 0.85 * r
    rt = 1.25 * r  # triangle pointing up, circumradius 1.25 r, centroid at the centre
    up = -dy
    triangle = torch.maximum(-up - 0.5 * rt, (math.sqrt(3) / 2) * ax + 0.5 * up - 0.5 * rt)
    arm = 0.38 * r
    cross = torch.minimum(torch.maximum(ax - r, ay - arm), torch.maximum(ax - arm, ay - r))
    d = torch.stack([circle, square, triangle, cross], 1)  # [B,4,H,W]
    d = d.gather(1, shape.view(-1, 1, 1, 1).expand(-1, 1, size, size))
    return (0.5 - d).clamp(0, 1)


def background(level: torch.Tensor, stripe: torch.Tensor, angle: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Grey background ``[B,3,H,W]``: ``level`` plus stripes of amplitude ``stripe`` at ``angle`` (radians)."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    u = coords.view(1, 1, size) * torch.cos(angle).view(-1, 1, 1) + coords.view(1, size, 1) * torch.sin(angle).view(-1, 1, 1)
    grey = level.view(-1, 1, 1) + stripe.view(-1, 1, 1) * torch.sin(u * (2 * math.pi / 6.0))
    return grey.unsqueeze(1).expand(-1, 3, -1, -1)


def paint(canvas: torch.Tensor, klass: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Draw objects of class ``klass [B]`` onto ``canvas [B,3,H,W]``."""
    alpha = shape_alpha(klass // len(COLOURS), cx, cy, radius, canvas.shape[-1])
    colour = COLOUR_RGB[klass % len(COLOURS)].view(-1, 3, 1, 1)
    return canvas * (1 - alpha) + colour * alpha


def object_layout(u: torch.Tensor, radius_min: float = 3.2, radius_span: float = 1.8,
                  inside: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre (cx, cy) and radius in pixels of the object :func:`render_params` draws from ``u [B,≥3]``.

    The radius is ``radius_min + radius_span · u₂``. The centre ranges over 3..29 px, or with ``inside`` over
    ``radius..32 − radius`` so that large objects stay in the frame.
    """
    radius = radius_min + radius_span * u[:, 2]
    if inside:
        return radius + (IMAGE_SIZE - 2 * radius) * u[:, 0], radius + (IMAGE_SIZE - 2 * radius) * u[:, 1], radius
    return 3.0 + 26.0 * u[:, 0], 3.0 + 26.0 * u[:, 1], radius


def render_params(klass: torch.Tensor, u: torch.Tensor, radius_min: float = 3.2, radius_span: float = 1.8,
                  inside: bool = False) -> torch.Tensor:
    """One object per image from uniform parameters ``u [B,6]`` in 0..1 (the generator's target renderer).

    ``u`` = (x, y, size, background level, stripe amplitude, stripe angle); the centre ranges over the
    whole image (:func:`object_layout`), so cells are not snapped to: the generator's latent space is continuous.
    """
    cx, cy, radius = object_layout(u, radius_min, radius_span, inside)
    canvas = background(0.08 + 0.32 * u[:, 3], 0.08 * u[:, 4], math.pi * u[:, 5])
    return paint(canvas, klass, cx, cy, radius)


def cell_of(cx: torch.Tensor, cy: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Grid cell (0..8, row-major) holding a centre given in pixels."""
    col = (cx * 3 / size).floor().clamp(0, 2).long()
    row = (cy * 3 / size).floor().clamp(0, 2).long()
    return row * 3 + col


def sample_scenes(count: int, seed: int, two_object_fraction: float = 0.0, size: int = IMAGE_SIZE,
                  radius_min: float = 3.2, radius_span: float = 1.8) -> Scenes:
    """``count`` random scenes from ``seed`` (same seed, same scenes).

    Objects are centred in their cell with up to ±2.5 px jitter (±8 % of the image), radius
    ``radius_min + radius_span · u`` at 32 px; a fraction of the scenes hold two objects in opposite cells
    (at grid distance 2, so they never overlap).
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(count, 16, generator=g)
    cell_px = size / 3
    two = u[:, 0] < two_object_fraction
    single_cell = (u[:, 1] * 9).long().clamp(max=8)
    pair = _FAR_PAIRS[(u[:, 2] * len(_FAR_PAIRS)).long().clamp(max=len(_FAR_PAIRS) - 1)]
    cells = torch.stack([torch.where(two, pair[:, 0], single_cell), pair[:, 1]], 1)
    classes = (u[:, 3:5] * NUM_CLASSES).long().clamp(max=NUM_CLASSES - 1)
    canvas = background(0.08 + 0.32 * u[:, 5], 0.08 * (u[:, 6] > 0.5) * u[:, 7], math.pi * u[:, 8], size)
    labels = torch.zeros(count, NUM_CELLS, dtype=torch.long)
    for j in range(2):
        cell = cells[:, j]
        cx = ((cell % 3).float() + 0.5) * cell_px + (u[:, 9 + 2 * j] - 0.5) * (5.0 * size / 32)
        cy = ((cell // 3).float() + 0.5) * cell_px + (u[:, 10 + 2 * j] - 0.5) * (5.0 * size / 32)
        radius = (radius_min + radius_span * u[:, 13 + j]) * (size / 32)
        drawn = paint(canvas, classes[:, j], cx, cy, radius)
        present = two if j == 1 else torch.ones_like(two)
        canvas = torch.where(present.view(-1, 1, 1, 1), drawn, canvas)
        labels[present, cell[present]] = classes[present, j] + 1
    return Scenes(canvas.clamp(0, 1), labels)


def scene_matches(caption_labels: torch.Tensor, caption_positioned: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[C,S]`` bool: does caption c describe scene s?

    A positioned caption matches a scene with exactly its objects in exactly its cells; an unpositioned
    caption (one object) matches any scene holding that single object anywhere.
    """
    exact = (caption_labels[:, None, :] == labels[None, :, :]).all(-1)
    cap_class = caption_labels.max(-1).values
    scene_count = (labels > 0).sum(-1)
    scene_class = labels.max(-1).values
    loose = (scene_count[None, :] == 1) & (cap_class[:, None] == scene_class[None, :])
    return torch.where(caption_positioned[:, None], exact, loose)

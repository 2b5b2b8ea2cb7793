"""The composition world's scenes: the first half's 32-px world with objects from normal to large, and fused scenes.

FuseDream-Composition shrinks a generated foreground by α = 0.5–0.65 and pastes it onto a background
(:func:`~fusedream_ops.composition.geometry.fuse`). For the result to be legible at 32 px the generator draws one object of
radius 3.2–10 px anywhere in the frame (:data:`RADIUS_MIN` + :data:`RADIUS_SPAN`): a large object shrunk by α has
the world's normal radius (3.2–5 px), and normal objects serve as backgrounds. The judge, the CLIP and the LPIPS
AlexNet are trained on :func:`training_scenes`: normal world scenes (half with two objects in opposite cells),
single objects of every size at every position, and fused scenes made by the pack's own ``fuse`` (a box of
another grey level holding a shrunk object), so they read objects, not box edges. Every object is labelled with
the cell its centre falls in (:func:`world.cell_of`), as in the first half.
"""
from __future__ import annotations

import math

import torch

from ..composition.geometry import POSITIONS, fuse, paste_box
from ..toyworld import world

RADIUS_MIN = 3.2
RADIUS_SPAN = 6.8
"""Generator objects have radius 3.2–10 px, centres kept in the frame (:func:`world.object_layout` ``inside``)."""
FUSED_SCALES = (0.45, 0.7)
"""Scales α of the fused training scenes: around the paper's 0.5 and 0.65."""
SMALLEST_FUSED_RADIUS = 2.6
"""A fused foreground object is at least this large after shrinking (the world's smallest is 3.2)."""


def render(klass: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The generator's target: one object of class ``klass [B]`` from uniform parameters ``u [B,6]``
    (:func:`world.render_params` with the composition world's sizes)."""
    return world.render_params(klass, u, RADIUS_MIN, RADIUS_SPAN, inside=True)


def layout(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre and radius in pixels of the object :func:`render` draws."""
    return world.object_layout(u, RADIUS_MIN, RADIUS_SPAN, inside=True)


def single_objects(count: int, seed: int) -> world.Scenes:
    """One object of any size (3.2–10 px) at any position, as the generator draws them."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(count, 7, generator=g)
    klass = (u[:, 6] * world.NUM_CLASSES).long().clamp(max=world.NUM_CLASSES - 1)
    cx, cy, _ = layout(u)
    labels = torch.zeros(count, world.NUM_CELLS, dtype=torch.long)
    labels[torch.arange(count), world.cell_of(cx, cy)] = klass + 1
    return world.Scenes(render(klass, u).clamp(0, 1), labels)


def _outside(box, cx: float, cy: float, reach: float) -> bool:
    """Does a square of half-size ``reach`` around (cx, cy) miss the box?"""
    return (cx + reach <= box.left or cx - reach >= box.left + box.width
            or cy + reach <= box.top or cy - reach >= box.top + box.height)


def fused_scene(klass: int, u: torch.Tensor, scale: float, position: str, background_objects: list[tuple[int, int]],
                v: torch.Tensor, size: int = world.IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused scene ``([3,S,S], labels [9])``: a foreground (object ``klass`` drawn from ``u [6]`` by
    :func:`render`; ``klass < 0`` for none) fused at ``(scale, position)`` onto a background holding normal
    objects ``(class, cell)`` drawn from ``v [≥4 + 3·objects]``.

    A background object is drawn only if it lies wholly outside the pasted box and not in the foreground
    object's cell (so every cell holds at most one object and no object is half hidden).
    """
    box = paste_box(size, size, scale, position)
    labels = torch.zeros(world.NUM_CELLS, dtype=torch.long)
    fg = world.background(0.08 + 0.32 * u[3:4], 0.08 * u[4:5], math.pi * u[5:6])
    fg_cell = -1
    if klass >= 0:
        fg = render(torch.tensor([klass]), u.view(1, -1))
        cx, cy, _ = layout(u.view(1, -1))
        fx = box.left + float(cx) * box.width / size
        fy = box.top + float(cy) * box.height / size
        fg_cell = int(world.cell_of(torch.tensor(fx), torch.tensor(fy)))
        labels[fg_cell] = klass + 1
    canvas = world.background(0.08 + 0.32 * v[0:1], 0.08 * (v[1:2] > 0.5) * v[2:3], math.pi * v[3:4])
    cell_px = size / 3
    for j, (k, cell) in enumerate(background_objects):
        jx, jy, jr = v[4 + 3 * j: 7 + 3 * j].tolist()
        cx = ((cell % 3) + 0.5) * cell_px + (jx - 0.5) * 5.0
        cy = ((cell // 3) + 0.5) * cell_px + (jy - 0.5) * 5.0
        radius = 3.2 + 1.8 * jr
        if cell != fg_cell and _outside(box, cx, cy, 1.25 * radius + 0.5):
            canvas = world.paint(canvas, torch.tensor([k]), torch.tensor([cx]), torch.tensor([cy]),
                                 torch.tensor([radius]))
            labels[cell] = k + 1
    return fuse(fg, canvas, scale, position)[0].clamp(0, 1), labels


def foreground_u(count: int, scale: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Foreground parameters ``[count,6]`` whose object, shrunk by ``scale``, has radius ≥ 2.6 px."""
    u = torch.rand(count, 6, generator=generator)
    smallest = ((SMALLEST_FUSED_RADIUS / scale - RADIUS_MIN) / RADIUS_SPAN).clamp(0, 1)
    u[:, 2] = smallest + (1 - smallest) * u[:, 2]
    return u


def fused_scenes(count: int, seed: int, scales: tuple[float, float] = FUSED_SCALES) -> world.Scenes:
    """Random fused scenes: α uniform in ``scales``, any of the 9 positions, the foreground object anywhere in
    its frame (10 % without one), 0–2 normal background objects in opposite cells."""
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(count, 6, generator=g)
    scale = scales[0] + (scales[1] - scales[0]) * r[:, 0]
    u = foreground_u(count, scale, g)
    v = torch.rand(count, 10, generator=g)
    pairs = world._FAR_PAIRS[(r[:, 1] * len(world._FAR_PAIRS)).long().clamp(max=len(world._FAR_PAIRS) - 1)]
    images, labels = [], []
    for i in range(count):
        klass = -1 if r[i, 2] < 0.1 else int(r[i, 3] * world.NUM_CLASSES)
        n_bg = int(r[i, 4] * 3)
        classes = torch.randint(world.NUM_CLASSES, (2,), generator=g).tolist()
        objects = [(classes[j], int(pairs[i, j])) for j in range(n_bg)]
        image, label = fused_scene(klass, u[i], float(scale[i]), POSITIONS[int(r[i, 5] * 9)], objects, v[i])
        images.append(image)
        labels.append(label)
    return world.Scenes(torch.stack(images), torch.stack(labels))


def training_scenes(count: int, seed: int) -> world.Scenes:
    """The mix every composition-world model trains on: a third each of normal world scenes (half with two
    objects in opposite cells), :func:`single_objects` of every size and :func:`fused_scenes`."""
    third = count // 3
    parts = [world.sample_scenes(third, 3 * seed, two_object_fraction=0.5),
             single_objects(third, 3 * seed + 1),
             fused_scenes(count - 2 * third, 3 * seed + 2)]
    return world.Scenes(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


def centred_fused_scenes(per_cell: int, seed: int, scales: tuple[float, ...] = (0.65, 0.5), aimed: bool = False
                         ) -> tuple[world.Scenes, list[tuple[float, str]]]:
    """The legibility check: for every (α, position), ``per_cell`` scenes made by ``fuse`` of a foreground whose
    object is centred in its frame (radius such that, shrunk, it has the world's normal 3.2–5 px) onto a
    background with one normal object outside the box when one fits. Returns the scenes and each one's (α, t).

    At α = 0.65 a centred object lands 0.17 px from the cell border at the 8 outer positions (the box centre is
    at 10.5 px, the border at 10.67). ``aimed`` places the object off-centre in its frame so that, fused, it sits
    at the centre of cell t: what a foreground optimised for the fused caption can do.
    """
    g = torch.Generator().manual_seed(seed)
    images, labels, cells = [], [], []
    centre = world.IMAGE_SIZE / 2
    for scale in scales:
        for position in POSITIONS:
            box = paste_box(world.IMAGE_SIZE, world.IMAGE_SIZE, scale, position)
            free = [c for c in range(world.NUM_CELLS)
                    if _outside(box, ((c % 3) + 0.5) * world.IMAGE_SIZE / 3, (c // 3 + 0.5) * world.IMAGE_SIZE / 3,
                                1.25 * 5.0 + 0.5 + 2.5)]
            for _ in range(per_cell):
                u = torch.rand(6, generator=g)
                radius = (3.2 + 1.8 * float(torch.rand(1, generator=g))) / scale
                u[2] = (min(radius, RADIUS_MIN + RADIUS_SPAN) - RADIUS_MIN) / RADIUS_SPAN
                span = world.IMAGE_SIZE - 2 * (RADIUS_MIN + RADIUS_SPAN * u[2])
                radius = RADIUS_MIN + RADIUS_SPAN * u[2]
                u[0] = u[1] = (centre - radius) / span
                if aimed:
                    cell = POSITIONS.index(position)
                    for axis, start, length in ((0, box.left, box.width), (1, box.top, box.height)):
                        target = ((cell % 3 if axis == 0 else cell // 3) + 0.5) * world.IMAGE_SIZE / 3
                        x = (target - start) * world.IMAGE_SIZE / length
                        u[axis] = ((x - radius) / span).clamp(0, 1)
                klass = int(torch.randint(world.NUM_CLASSES, (1,), generator=g))
                v = torch.rand(7, generator=g)
                objects = []
                if free:
                    cell = free[int(torch.randint(len(free), (1,), generator=g))]
                    objects = [(int(torch.randint(world.NUM_CLASSES, (1,), generator=g)), cell)]
                image, label = fused_scene(klass, u, scale, position, objects, v)
                images.append(image)
                labels.append(label)
                cells.append((scale, position))
    return world.Scenes(torch.stack(images), torch.stack(labels)), cells


def captioned_training_scenes(count: int, seed: int) -> world.Scenes:
    """:func:`training_scenes` without the few that hold no object (they have no caption): the CLIP's data."""
    s = training_scenes(count, seed)
    keep = (s.labels > 0).any(-1)
    return world.Scenes(s.images[keep], s.labels[keep])

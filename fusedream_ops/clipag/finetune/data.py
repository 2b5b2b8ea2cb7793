"""Image-caption pairs for fine-tuning: from a folder or a CSV, split, and batched resumably."""
from __future__ import annotations

import csv
import os
from typing import Iterator

import torch

from ...core.errors import require
from ...core.images import from_pil
from ...safety.image_files import IMAGE_EXTENSIONS, read_image
from ..init_images import square_resize

MAX_LISTED = 5


def pairs_from_folder(folder: str) -> list[tuple[str, str]]:
    """``(image path, caption)`` for every image of ``folder`` (recursively) with a same-stem ``.txt`` beside it."""
    images, missing = [], []
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                path = os.path.join(root, name)
                caption = os.path.splitext(path)[0] + ".txt"
                (images if os.path.isfile(caption) else missing).append(path)
    require(not missing, f"data folder '{folder}': {len(missing)} image(s) have no same-stem .txt caption, e.g. "
                         f"{', '.join(missing[:MAX_LISTED])}. Add a caption file beside each image.")
    pairs = []
    for path in images:
        with open(os.path.splitext(path)[0] + ".txt", encoding="utf-8") as f:
            caption = f.read().strip()
        require(bool(caption), f"caption file for '{path}' is empty.")
        pairs.append((path, caption))
    return pairs


def pairs_from_csv(path: str, img_key: str = "filepath", caption_key: str = "title",
                   separator: str = ",") -> list[tuple[str, str]]:
    """Pairs from a CSV with a header; relative image paths are relative to the CSV's folder."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=separator)
        columns = reader.fieldnames or []
        require(img_key in columns and caption_key in columns,
                f"CSV '{path}' needs columns '{img_key}' and '{caption_key}' (--csv-img-key, --csv-caption-key); "
                f"it has: {', '.join(columns) or 'no header'}.")
        pairs = [(os.path.join(base, row[img_key]), (row[caption_key] or "").strip()) for row in reader]
    missing = [p for p, _ in pairs if not os.path.isfile(p)]
    require(not missing, f"CSV '{path}': {len(missing)} image(s) do not exist, e.g. {', '.join(missing[:MAX_LISTED])}.")
    empty = [p for p, c in pairs if not c]
    require(not empty, f"CSV '{path}': {len(empty)} row(s) have an empty caption, e.g. "
                       f"{', '.join(empty[:MAX_LISTED])}.")
    return pairs


def read_pairs(source: str, img_key: str = "filepath", caption_key: str = "title",
               separator: str = ",") -> list[tuple[str, str]]:
    if os.path.isdir(source):
        pairs = pairs_from_folder(source)
    else:
        require(os.path.isfile(source), f"--data '{source}' is neither a folder of image+caption pairs nor a CSV.")
        pairs = pairs_from_csv(source, img_key, caption_key, separator)
    require(len(pairs) >= 2, f"--data '{source}' holds {len(pairs)} pair(s); at least 2 are needed.")
    return pairs


def split_pairs(pairs: list, val_fraction: float, val_max: int, seed: int) -> tuple[list, list]:
    """A seeded held-out split (at least 2 pairs, so retrieval means something, when there are 4 or more)."""
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(int(seed) + 1)).tolist()
    n_val = min(val_max, int(round(len(pairs) * val_fraction))) if val_fraction > 0 else 0
    if 0 < n_val < 2:
        n_val = 2 if len(pairs) >= 4 else 0
    val = [pairs[i] for i in sorted(order[:n_val])]
    train = [pairs[i] for i in sorted(order[n_val:])]
    return train, val


class PairDataset(torch.utils.data.Dataset):
    """Images centre-cropped and resized to the model's input size, in [0, 1], with their captions."""

    def __init__(self, pairs: list[tuple[str, str]], size: int):
        self.pairs = pairs
        self.size = size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        path, caption = self.pairs[index]
        return square_resize(from_pil(read_image(path, shrink_to=self.size)), self.size)[0], caption


class ResumableBatches(torch.utils.data.Sampler):
    """Endless batches: each epoch is a seeded permutation cut into global batches of ``batch·world`` pairs,
    rank r taking every world-th pair; starting at batch ``start`` reproduces an uninterrupted run exactly."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        self.n, self.batch, self.seed, self.rank, self.world, self.start = n, batch, seed, rank, world, start
        self.per_epoch = n // (batch * world)
        require(self.per_epoch >= 1, f"{n} training pairs are fewer than one batch of {batch} per process "
                                     f"× {world} process(es); lower --batch-size or add data.")

    def __iter__(self) -> Iterator[list[int]]:
        index = self.start
        while True:
            epoch, position = divmod(index, self.per_epoch)
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            chunk = order[position * self.batch * self.world:(position + 1) * self.batch * self.world]
            yield chunk[self.rank::self.world].tolist()
            index += 1

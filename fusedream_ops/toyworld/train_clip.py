"""A tiny open_clip CLIP trained contrastively on the toy world.

open_clip's own ``CLIP`` class with a small config: a ViT on 32×32 images (4-px patches) and a text
transformer over open_clip's default tokenizer (vocabulary 49408, context 77, so real prompts tokenize as
usual). Captions repeat across a batch (and a caption without position describes many scenes), so the
InfoNCE targets are the normalised match matrix of :func:`world.scene_matches` instead of the identity.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..toyworld import world

CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def build_clip(config: dict = CLIP_CONFIG):
    import open_clip

    return open_clip.CLIP(embed_dim=config["embed_dim"], vision_cfg=dict(config["vision_cfg"]),
                          text_cfg=dict(config["text_cfg"]))


class CaptionTokens:
    """open_clip's default tokenizer with a cache: the world's captions repeat a lot."""

    def __init__(self, context_length: int = 77):
        import open_clip

        self.tokenizer = open_clip.get_tokenizer("ViT-B-32")
        self.context_length = context_length
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            for c, t in zip(missing, self.tokenizer(missing, context_length=self.context_length)):
                self.cache[c] = t
        return torch.stack([self.cache[c] for c in captions])


def caption_batch(labels: torch.Tensor, generator: torch.Generator, unpositioned: float = 0.2):
    """One caption per scene; single-object captions omit the position with probability ``unpositioned``."""
    single = (labels > 0).sum(-1) == 1
    positioned = ~(single & (torch.rand(len(labels), generator=generator) < unpositioned))
    captions = [world.caption_for(l, bool(p)) for l, p in zip(labels, positioned)]
    return captions, positioned


def light_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Brightness/contrast jitter, ±2 px shifts and a small grey square, each image with its own draw.

    Mild enough to keep every caption true (cells are ~11 px wide), so the model is not brittle to the
    AugCLIP views it is later scored with.
    """
    b = x.shape[0]
    r = torch.rand(b, 6, generator=generator)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (0.75 + 0.5 * r[:, 0]).view(-1, 1, 1, 1) + mean + (r[:, 1] - 0.5).view(-1, 1, 1, 1) * 0.3
    shift = torch.randint(-2, 3, (b, 2), generator=generator)
    size = x.shape[-1]
    idx = torch.arange(size)
    rows = (idx.view(1, -1) - shift[:, :1]).clamp(0, size - 1)
    cols = (idx.view(1, -1) - shift[:, 1:]).clamp(0, size - 1)
    x = x.gather(2, rows.view(b, 1, size, 1).expand(-1, 3, -1, size))
    x = x.gather(3, cols.view(b, 1, 1, size).expand(-1, 3, size, -1))
    cy, cx = (r[:, 2] * size).long(), (r[:, 3] * size).long()
    inside = ((idx.view(1, -1, 1) - cy.view(-1, 1, 1)).abs() <= 3) & ((idx.view(1, 1, -1) - cx.view(-1, 1, 1)).abs() <= 3)
    cut = inside & (r[:, 4] < 0.3).view(-1, 1, 1)
    x = torch.where(cut.unsqueeze(1), torch.full_like(x, 0.5), x)
    return x.clamp(0, 1)


class CompactText(torch.nn.Module):
    """Training-time view of the text tower: only the token rows the world's captions use, only as many
    positions as the longest caption.

    Identical to ``model.encode_text``: attention is causal and the feature is read at the end-of-text token,
    so padding after it never reaches the result; rows of words the world never uses get no gradient
    anyway. Training a 40-row table instead of 49408 rows, over ~20 positions instead of 77, is what makes
    the CPU budget. :meth:`write_back` copies the rows into the model (other rows are zero).
    """

    def __init__(self, model, vocabulary: torch.Tensor):
        super().__init__()
        self.model = model
        self.vocabulary = vocabulary
        lookup = torch.full((model.token_embedding.num_embeddings,), -1, dtype=torch.long)
        lookup[vocabulary] = torch.arange(len(vocabulary))
        self.register_buffer("lookup", lookup, persistent=False)
        self.rows = torch.nn.Parameter(model.token_embedding.weight.detach()[vocabulary].clone())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        length = int((tokens != 0).sum(1).max())
        tokens = tokens[:, :length]
        x = self.rows[self.lookup[tokens]] + m.positional_embedding[:length]
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
        return x @ m.text_projection

    @torch.no_grad()
    def write_back(self) -> None:
        weight = self.model.token_embedding.weight
        weight.zero_()
        weight[self.vocabulary] = self.rows.detach()


def world_vocabulary(tokens: "CaptionTokens") -> torch.Tensor:
    """Every token id the world's captions can contain (plus padding, start and end of text)."""
    words = sorted({w for phrase in world.CELL_PHRASES for w in phrase.split()} | set(world.SHAPES)
                   | set(world.COLOURS) | {"a", "and"})
    ids = tokens.tokenizer([" ".join(words)] + [f"a {w}" for w in words], context_length=77)
    return torch.unique(torch.cat([ids.flatten(), torch.tensor([0])]))


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - CLIP_MEAN.to(x)) / CLIP_STD.to(x)


def shape_swapped(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The scenes with one object's shape replaced by another shape (same colour, same cell).

    Used as hard negative captions: in a random batch two scenes rarely differ only by shape (~2 % of
    pairs), so without them the model learns colour and position long before shape.
    """
    out = labels.clone()
    rows = torch.arange(len(labels))
    present = (labels > 0).float()
    cell = torch.multinomial(present, 1, generator=generator).squeeze(1)
    klass = labels[rows, cell] - 1
    colours = len(world.COLOURS)
    shift = torch.randint(1, len(world.SHAPES), (len(labels),), generator=generator)
    shape = (klass // colours + shift) % len(world.SHAPES)
    out[rows, cell] = shape * colours + klass % colours + 1
    return out


def contrastive_loss(image_features, text_features, logit_scale, match):
    """Symmetric InfoNCE with multi-positive targets ``match [T, B]`` (texts × images).

    Texts may outnumber images (hard negatives); text→image terms are taken over texts with a match only.
    """
    logits = logit_scale.exp() * text_features @ image_features.t()
    m = match.float()
    has = m.sum(1) > 0
    target_t = m[has] / m[has].sum(1, keepdim=True)
    target_i = m.t() / m.t().sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target_t * F.log_softmax(logits[has], 1), 1).mean()
                  + torch.sum(-target_i * F.log_softmax(logits.t(), 1), 1).mean())


def train_clip(steps: int = 2000, batch: int = 128, seed: int = 1, lr: float = 2e-3,
               two_object_fraction: float = 0.3, log: Optional[Callable[[str], None]] = None,
               sampler: Optional[Callable[[int, int], world.Scenes]] = None):
    """Train :func:`build_clip` on fresh world scenes every step; returns the model in eval mode.

    ``sampler(count, seed)`` draws the scenes (default: :func:`world.sample_scenes` with ``two_object_fraction``).
    """
    torch.manual_seed(seed)
    model = build_clip()
    tokens = CaptionTokens(CLIP_CONFIG["text_cfg"]["context_length"])
    text = CompactText(model, world_vocabulary(tokens))
    model.token_embedding.weight.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    params = [(n, p) for n, p in text.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2 and "embedding" not in n and n != "rows"]
    other = [p for n, p in params if not (p.ndim >= 2 and "embedding" not in n and n != "rows")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    start = time.time()
    for step in range(steps):
        scenes = (world.sample_scenes(batch, seed * 1_000_003 + step, two_object_fraction) if sampler is None
                  else sampler(batch, seed * 1_000_003 + step))
        captions, positioned = caption_batch(scenes.labels, g)
        negatives = shape_swapped(scenes.labels, g)
        captions = captions + [world.caption_for(l) for l in negatives]
        caption_labels = torch.cat([scenes.labels, negatives])
        positioned = torch.cat([positioned, torch.ones_like(positioned)])
        match = world.scene_matches(caption_labels, positioned, scenes.labels)
        images = light_augment(scenes.images, g)
        image_features = F.normalize(model.encode_image(normalize(images)), dim=-1)
        text_features = F.normalize(text(tokens(captions)), dim=-1)
        loss = contrastive_loss(image_features, text_features, model.logit_scale, match)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if log is not None and (step % 200 == 0 or step == steps - 1):
            log(f"clip step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f} s)")
    text.write_back()
    model.token_embedding.weight.requires_grad_(True)
    return model.eval()


def retrieval_accuracy(model, count: int = 2000, seed: int = 777, two_object_fraction: float = 0.3,
                       sampler: Optional[Callable[[int, int], world.Scenes]] = None) -> float:
    """Fraction of fresh scenes whose own positioned caption scores highest among all the batch's captions."""
    tokens = CaptionTokens(CLIP_CONFIG["text_cfg"]["context_length"])
    scenes = world.sample_scenes(count, seed, two_object_fraction) if sampler is None else sampler(count, seed)
    captions = sorted({world.caption_for(l) for l in scenes.labels})
    index = {c: i for i, c in enumerate(captions)}
    with torch.no_grad():
        img = F.normalize(model.encode_image(normalize(scenes.images)), dim=-1)
        txt = F.normalize(torch.cat([model.encode_text(tokens(captions[i:i + 512]))
                                     for i in range(0, len(captions), 512)]), dim=-1)
    best = (img @ txt.t()).argmax(1)
    truth = torch.tensor([index[world.caption_for(l)] for l in scenes.labels])
    return (best == truth).float().mean().item()

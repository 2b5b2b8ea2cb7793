"""Ranking any IMAGE batch by AugCLIP (fusedream_ops/ranking.py and the Rank Images node), on the tiny open_clip."""
import pytest
import torch

from fusedream_pack.fusedream_ops.fusedream.augment import AugmentPolicy
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fusedream.objective import AugClipObjective
from fusedream_pack.fusedream_ops.fusedream.ranking import (MAX_VIEWS_PER_BATCH, chunk_for_memory, draw_generator, rank,
                                                  rank_images, score_images)

from testkit.workflows import run_node

SEED, DRAWS = 7, 3


def _images(n=6, size=32, seed=0):
    """Images with distinct content: a blob of a different colour and place each, on noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.3
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        x[i, :, top:top + size // 2, left:left + size // 2] += torch.rand(3, 1, 1, generator=g)
    return x.clamp(0, 1)


def _reference(objective, images, draws=DRAWS, seed=SEED):
    """AugCLIP of each image on its own, draw d from the seed + d generator (what the ranking promises)."""
    with torch.no_grad():
        return torch.stack([torch.stack([objective.score(image, draw_generator(seed, d)) for d in range(draws)]).mean()
                            for image in images.split(1)]).flatten()


@pytest.fixture(scope="module")
def objective(tiny_scorer):
    return AugClipObjective(tiny_scorer, [("a red circle on the left", 1.0)], AugmentPolicy(), copies=4)


def test_scores_are_augclip_means_over_the_same_draws_for_every_image(objective):
    """Fails when augmentation is dropped (checked by scoring ``augment=False`` inside score_images): the plain
    cosine is not the AugCLIP reference."""
    images = _images()
    expected = _reference(objective, images)
    with torch.no_grad():
        plain = objective.cosine(images)
    assert not torch.allclose(expected, plain, atol=1e-4), "precondition: augmentation changes the scores"
    assert torch.allclose(score_images(objective, images, DRAWS, SEED), expected, atol=1e-5)
    assert torch.allclose(score_images(objective, images, DRAWS, SEED, augment=False), plain, atol=1e-5)


def test_an_images_score_does_not_depend_on_its_place_the_batch_or_the_chunking(objective):
    images = _images(7)
    scores = score_images(objective, images, DRAWS, SEED, chunk=0)
    perm = torch.tensor([3, 6, 0, 1, 5, 2, 4])
    assert torch.allclose(score_images(objective, images[perm], DRAWS, SEED, chunk=2), scores[perm], atol=1e-5)
    assert torch.allclose(score_images(objective, images[2:3], DRAWS, SEED), scores[2:3], atol=1e-5)
    assert torch.equal(score_images(objective, images, DRAWS, SEED), scores)
    assert not torch.allclose(score_images(objective, images, DRAWS, SEED + 1), scores, atol=1e-5)


def test_the_ranking_is_best_first_and_ties_keep_the_input_order(objective):
    """Fails when the order is reversed (checked by sorting ascending in rank()) and when ties lose the input order
    (checked with stable=False: only the long run of ties reorders)."""
    images = _images()
    ranking = rank_images(objective, images, DRAWS, SEED)
    expected = _reference(objective, images)
    assert ranking.order.tolist() == sorted(range(6), key=lambda i: -float(expected[i]))
    assert ranking.scores[ranking.order].diff().le(0).all()
    assert rank(torch.tensor([0.1, 0.3, 0.1, 0.3])).order.tolist() == [1, 3, 0, 2]
    long_ties = torch.tensor([0.1, 0.3] * 64)  # a short run sorts stably by chance even with stable=False
    assert rank(long_ties).order.tolist() == list(range(1, 128, 2)) + list(range(0, 128, 2))


def test_a_negative_prompt_lowers_the_score_by_its_weighted_similarity(tiny_scorer):
    """Fails when a negative prompt's sign flips (checked by using abs() of the weights in similarity())."""
    images = _images()
    policy = AugmentPolicy()
    both = AugClipObjective(tiny_scorer, [("a red circle", 1.0), ("a blue square", -0.5)], policy, copies=4)
    positive = AugClipObjective(tiny_scorer, [("a red circle", 1.0)], policy, copies=4)
    negative = AugClipObjective(tiny_scorer, [("a blue square", 1.0)], policy, copies=4)
    plus, minus = score_images(positive, images, DRAWS, SEED), score_images(negative, images, DRAWS, SEED)
    assert minus.abs().min() > 1e-3, "precondition: the negative prompt's similarity is not zero"
    assert torch.allclose(score_images(both, images, DRAWS, SEED), plus - 0.5 * minus, atol=1e-5)


class CountingScorer:
    """The real tiny scorer, recording how many views each CLIP batch holds."""

    def __init__(self, scorer):
        self.scorer, self.batches = scorer, []

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def encode_images(self, images):
        self.batches.append(images.shape[0])
        return self.scorer.encode_images(images)


def test_unaugmented_scores_encode_each_image_once_whatever_the_draws(tiny_scorer):
    """One plain view per image is the same in every draw (seen failing with the draws loop run as asked: 4× the
    CLIP batches for the same numbers)."""
    counting = CountingScorer(tiny_scorer)
    objective = AugClipObjective(counting, [("a dog", 1.0)], AugmentPolicy(), copies=4)
    images = _images(12, seed=1)
    once = score_images(objective, images, draws=1, seed=0, augment=False, chunk=6)
    counting.batches.clear()
    assert torch.equal(score_images(objective, images, draws=4, seed=0, augment=False, chunk=6), once)
    assert counting.batches == [6, 6]


def test_large_batches_are_scored_in_bounded_chunks_and_on_step_can_cancel(tiny_scorer):
    counting = CountingScorer(tiny_scorer)
    objective = AugClipObjective(counting, [("a dog", 1.0)], AugmentPolicy(), copies=4)
    images = _images(40, seed=1)
    score_images(objective, images, draws=2, seed=0, chunk=6)
    assert max(counting.batches) == 6 * 4 and sum(counting.batches) == 40 * 4 * 2
    chunk = chunk_for_memory(objective, 1024, 1024, True, free_bytes=2 << 30)
    assert 1 <= chunk * 4 <= MAX_VIEWS_PER_BATCH and chunk < chunk_for_memory(objective, 64, 64, True, 2 << 30)
    counting.batches.clear()

    class Cancelled(Exception):
        pass

    def cancel_at_second(step):
        if step.step == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        score_images(objective, images, draws=2, seed=0, chunk=6, on_step=cancel_at_second)
    assert len(counting.batches) == 2


def test_the_node_returns_sorted_images_scores_indices_top_n_and_text(tiny_models):
    """Fails when the order is reversed or augmentation is dropped (both checked by breaking ranking.py)."""
    (clip,) = run_node("FuseDreamCLIPLoader", architecture="auto", checkpoint="ViT-B-32.safetensors")["result"]
    (objective,) = run_node("FuseDreamAugCLIPObjective", clip=clip, prompt="a red circle\nblurry:-0.5",
                            copies=4)["result"]
    images = _images(5, size=40)
    batch = images.movedim(1, -1).contiguous()
    out = run_node("FuseDreamRankImages", image=batch, objective=objective, top_n=2, draws=2, seed=SEED)
    ranked, top, scores, indices, text = out["result"]
    expected = _reference(objective, images, draws=2)
    assert indices == sorted(range(5), key=lambda i: -float(expected[i]))
    assert torch.allclose(torch.tensor(scores), expected[indices], atol=1e-5)
    assert torch.equal(ranked, batch[indices]) and torch.equal(top, batch[indices[:2]])
    assert out["ui"]["text"] == [text] and text.splitlines()[0] == f"1. #{indices[0]}  {scores[0]:.4f}"
    few = run_node("FuseDreamRankImages", image=batch[:1], objective=objective, top_n=4, draws=1)["result"]
    assert few[1].shape[0] == 1 and few[3] == [0]


def test_an_empty_batch_is_refused_before_any_work(objective):
    with pytest.raises(FuseDreamError, match="empty"):
        score_images(objective, torch.zeros(0, 3, 32, 32))
    with pytest.raises(FuseDreamError, match="image"):
        run_node("FuseDreamRankImages", image=torch.zeros(0, 32, 32, 3), objective=objective)

"""The stable paper claims, asserted on the committed toy-world fixtures with small budgets.

The fixtures are rebuilt by ``python -m fusedream_ops.toyworld.build tests/fixtures/toyworld``; the full table
is ``benchmarks/toyworld_claims.py``.
"""
import os

import pytest
import torch

from fusedream_pack.fusedream_ops.toyworld import measure, world
from fusedream_pack.fusedream_ops.toyworld.judge import world_accuracy

pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(measure.FIXTURES, "toyworld", "judge.safetensors")),
                                reason="toy-world fixtures not built")


@pytest.fixture(scope="module")
def toyworld():
    return measure.load_toyworld()


def test_judge_reads_fresh_world_scenes_almost_always(toyworld):
    assert world_accuracy(toyworld.judge, count=500, seed=123456) >= 0.98


def test_tiny_clip_reads_colour_and_cell_reliably_and_shape_far_above_chance(toyworld):
    captions, labels = [], []
    for klass in range(world.NUM_CLASSES):
        for cell in range(world.NUM_CELLS):
            captions.append(world.object_phrase(klass, cell))
            labels.append((klass, cell))
    scenes = world.sample_scenes(300, 8080)
    with torch.no_grad():
        best = (toyworld.scorer.encode_images(scenes.images) @ toyworld.scorer.encode_text(captions).t()).argmax(1)
    klass = torch.tensor([labels[i][0] for i in best])
    cell = torch.tensor([labels[i][1] for i in best])
    true_class = scenes.labels.max(-1).values - 1
    true_cell = (scenes.labels > 0).float().argmax(-1)
    colour_and_cell = ((klass % 4 == true_class % 4) & (cell == true_cell)).float().mean()
    exact = ((klass == true_class) & (cell == true_cell)).float().mean()
    assert colour_and_cell >= 0.95
    assert exact >= 0.5  # chance is 1/144; shape is the tiny ViT's weak attribute (~62 %)


def test_full_fusedream_succeeds_more_often_than_naive_clip_gan(toyworld):
    budget = measure.Budget(steps=30, candidates=128, copies=8, eval_copies=8)
    scores = measure.compare_generation(toyworld, measure.evaluation_captions(4), [0], budget,
                                        methods=("naive", "fusedream"))
    assert scores["fusedream"].success_rate > scores["naive"].success_rate


def test_optimisation_over_the_basis_raises_augclip_above_the_top_k_search(toyworld):
    """At the same M = 128 latents, FuseDream (top-5 by plain CLIP, then 30 AugCLIP steps over the basis) ends at a
    higher re-measured AugCLIP than the search alone: the best of M by plain CLIP, or the top-5 mean it starts from.
    Measured (8 captions × seeds 0, 1; 1 torch thread): 0.650 vs 0.584 and 0.564; the benchmark's budget gives
    0.658 vs 0.579 / 0.597 (8 × 2), 0.648 vs 0.582 / 0.594 (16 × 3), 0.655 at 2 threads. Asserted: above both by 0.03.
    The judged success is NOT asserted: here FuseDream 10/16 vs 6/16 and 3/16, at the benchmark's 8 × 2 11 vs 7 of
    16, but at 16 × 3 46 % vs 52 % (best of M) and 54 % (top-k mean): the gain in success does not reproduce.
    Sabotage: `optimizer.step()` removed (FuseDream = the top-k mean plus latent noise) → fails.
    """
    budget = measure.Budget(steps=30, candidates=128, copies=8, eval_copies=8)
    scores = measure.compare_generation(toyworld, measure.evaluation_captions(8), [0, 1], budget,
                                        methods=("best_of_m", "topk_mean", "fusedream"))
    f, b, t = (scores[m] for m in ("fusedream", "best_of_m", "topk_mean"))
    assert f.mean_augclip > max(b.mean_augclip, t.mean_augclip) + 0.03, (f.mean_augclip, b.mean_augclip,
                                                                         t.mean_augclip)


def test_fgsm_raises_plain_clip_far_more_than_augclip(toyworld):
    attack = measure.fgsm_check(toyworld, count=32, copies=8, eval_copies=32)
    assert attack.clip_gain > 0
    assert attack.clip_gain > 2 * attack.augclip_gain

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


def test_optimisation_over_the_basis_adds_to_the_top_k_search(toyworld):
    """At the same M = 128 latents, FuseDream (top-5 by plain CLIP, then 30 AugCLIP steps over the basis) succeeds
    more often than the search alone: the best of M by plain CLIP, or the top-5 mean it would start from.
    Measured (8 captions × seeds 0, 1; 1 torch thread): FuseDream 10/16, top-k mean 6/16, best of M 3/16 (per seed:
    4 vs 3 vs 3 and 6 vs 3 vs 0); re-measured AugCLIP 0.650 vs 0.564 vs 0.584. Asserted: FuseDream's count above
    both search-only counts, and its AugCLIP above both by 0.03.
    Sabotage: `optimizer.step()` removed (FuseDream = the top-k mean) → fails.
    """
    budget = measure.Budget(steps=30, candidates=128, copies=8, eval_copies=8)
    scores = measure.compare_generation(toyworld, measure.evaluation_captions(8), [0, 1], budget,
                                        methods=("best_of_m", "topk_mean", "fusedream"))
    f, b, t = (scores[m] for m in ("fusedream", "best_of_m", "topk_mean"))
    assert sum(f.successes) > max(sum(b.successes), sum(t.successes)), (f.successes, b.successes, t.successes)
    assert f.mean_augclip > max(b.mean_augclip, t.mean_augclip) + 0.03


def test_fgsm_raises_plain_clip_far_more_than_augclip(toyworld):
    attack = measure.fgsm_check(toyworld, count=32, copies=8, eval_copies=32)
    assert attack.clip_gain > 0
    assert attack.clip_gain > 2 * attack.augclip_gain

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


def test_tiny_clip_prefers_the_true_caption(toyworld):
    scenes = world.sample_scenes(64, 8080)
    captions = [world.caption_for(l) for l in scenes.labels]
    with torch.no_grad():
        sims = toyworld.scorer.encode_images(scenes.images) @ toyworld.scorer.encode_text(captions).t()
    assert (sims.argmax(1) == torch.arange(64)).float().mean() >= 0.8


def test_full_fusedream_succeeds_more_often_than_naive_clip_gan(toyworld):
    budget = measure.Budget(steps=30, candidates=128, copies=8, eval_copies=8)
    scores = measure.compare_generation(toyworld, measure.evaluation_captions(4), [0], budget,
                                        methods=("naive", "fusedream"))
    assert scores["fusedream"].success_rate > scores["naive"].success_rate


def test_fgsm_raises_plain_clip_far_more_than_augclip(toyworld):
    attack = measure.fgsm_check(toyworld, count=32, copies=8, eval_copies=32)
    assert attack.clip_gain > 0
    assert attack.clip_gain > 2 * attack.augclip_gain

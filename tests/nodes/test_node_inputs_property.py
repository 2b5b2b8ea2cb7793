"""Property-based: every node's inputs driven through the ranges its INPUT_TYPES declares and beyond.

Each input of each node is broken in turn (NaN, ±inf, below the minimum, above the maximum, a wrong type, an empty or
odd-shaped image, NaN pixels, a disconnected or NaN-holding custom value) while the others stay valid: the node must
raise a FuseDreamError naming that input. With every input drawn from its declared range (costly counts such as
steps from the cheap end of it) the node must return a valid result (one value per output, images in 0..1, nothing
NaN) or raise a FuseDreamError; never another exception. Derandomized, so CI sees the same examples every run.
"""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures import kandinsky
from fusedream_pack.fusedream_ops.validation.finite import first_nonfinite
from fusedream_pack.nodes import NODE_CLASS_MAPPINGS
from testkit.pack_values import values as pack_values

CHEAP = {"steps": 2, "candidates": 6, "copies": 2, "draws": 2, "size": 40, "batch_size": 2, "views": 2,
         "patches": 2, "max_iterations": 30, "blend_iterations": 30, "score_draws": 2, "images_per_embed": 2, "k": 3,
         "num_tokens": 2, "width": 64, "height": 64, "cells_per_batch": 2}
"""Valid draws of these inputs stay at the cheap end of their range (invalid ones roam the whole number line)."""

EXAMPLES = {"FuseDreamCompositionGridSearch": 12, "FuseDreamCompositionOptimizer": 12, "FuseDreamBasisOptimizer": 16,
            "FuseDreamCLIPAGSynthesis": 16, "FuseDreamKandinsky22Decoder": 12, "FuseDreamOVIPrior": 12,
            "FuseDreamKandinsky22TrainedPrior": 8, "FuseDreamBigGANLoader": 6, "FuseDreamCLIPLoader": 6,
            "FuseDreamKandinsky22EncodersLoader": 6, "FuseDreamKandinsky22EncodersFromFiles": 6,
            "FuseDreamKandinsky22DecoderLoader": 6, "FuseDreamLPIPSLoader": 6}
"""Examples per node where 30 would be slow (the optimizers, the decoder, loading models)."""
DEFAULT_EXAMPLES = 30

STRINGS = {
    "prompt": ["a photo of a blue dog", "dog:2\nblurry:-0.5", "dog:abc", "dog:nan", "a:1:2", "time 10:30",
               "time 10:30 :1", "dog:1e400", "", "blurry:0", ":2", "word " * 120],
    "negative_prompt": ["", "blurry", "word " * 120],
    "classes": ["", "golden retriever, 281", "no such class", "5000", "1, 2", "-1"],
    "color": ["#808080", "10, 20, 30", "red", "", "300, 0, 0", "nan, 0, 0"],
    "folder": ["", "", "no-such-folder"],
    "save_name": ["", "../outside", "a/b", ".hidden"],
    "scales": ["0.5", "0.65", "0.5, 0.65", "x", "", "nan", "2", "0.5, 0.5"],
    "positions": ["center", "top-left", "top-left, center", "bottom-right", "nowhere", ""],
}
FREE_TEXT = ("prompt", "negative_prompt")
"""Strings that also get arbitrary text; the others are drawn from their list (arbitrary text is just invalid)."""
NO_VALID_CHOICE = {"FuseDreamKandinsky22EncodersFromFiles", "FuseDreamOVIReferenceStatsLoad",
                   "FuseDreamReferenceImageGaussian", "FuseDreamCLIPVisionScorer"}
"""No valid example exists here: the fixture tree has no single-file encoders or statistics files, folders of
reference images are another test's subject, and a CLIP_VISION exists only inside ComfyUI
(tests/e2e/test_clip_vision_in_comfyui.py)."""
CHOICES = {"architecture": ["auto", "ViT-B-32", "ViT-B-32-quickgelu"]}
"""Valid draws of these combos: constructing every open_clip architecture (ViT-bigG: 10 GB) is not a unit test."""
NOT_A_NUMBER = [float("nan"), float("inf"), -float("inf"), "3", None, [1]]


def _number_strategies(kind, options, name):
    lo, hi = options.get("min"), options.get("max")
    cheap = CHEAP.get(name)
    top = hi if cheap is None else min(hi, max(lo, cheap))
    if kind == "INT":
        valid = st.integers(lo, top)
        invalid = [st.sampled_from(NOT_A_NUMBER + [2.5, True]), st.integers(max_value=lo - 1),
                   st.integers(min_value=hi + 1)]
    else:
        valid = st.floats(lo, top, allow_nan=False)
        invalid = [st.sampled_from(NOT_A_NUMBER + [True]), st.floats(max_value=lo, exclude_max=True),
                   st.floats(min_value=hi, exclude_min=True)]
    return valid, st.one_of(invalid)


@st.composite
def _image(draw, size, valid=True, channels=None):
    b, h, w = size
    c = channels or draw(st.sampled_from([3, 1, 4]))
    seed = draw(st.integers(0, 2**16))
    if not valid:
        broken = draw(st.sampled_from(["empty", "zero side", "three dims", "nan", "two channels", "list"]))
        if broken == "list":
            return [[0.5]]
        if broken == "three dims":
            return torch.rand(h, w, 3)
        b, h, w, c = {"empty": (0, h, w, c), "zero side": (b, 0, w, c), "two channels": (b, h, w, 2)}.get(
            broken, (b, h, w, c))
        image = torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))
        if broken == "nan":
            image[0, 0, 0, 0] = float("nan")
        return image
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


@st.composite
def _mask(draw, size, valid=True):
    b, h, w = size
    mask = torch.zeros(b, h, w)
    top, left = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
    mask[:, top:top + draw(st.integers(1, h)), left:left + draw(st.integers(1, w))] = 1.0
    if not valid:
        broken = draw(st.sampled_from(["empty", "nan", "four dims"]))
        return {"empty": torch.zeros(0, h, w), "four dims": mask[:, None, :, :, None]}.get(broken, mask.fill_(
            float("nan")))
    return mask


def _poisoned(value):
    """A copy of a custom value whose first tensor holds NaN (None when it holds no tensor)."""
    import copy
    import dataclasses

    if isinstance(value, torch.Tensor):
        bad = value.clone()
        bad.view(-1)[0] = float("nan")
        return bad
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                bad = item.clone()
                bad.view(-1)[0] = float("nan")
                return dataclasses.replace(copy.copy(value), **{f.name: bad})
    return None


def _draw_value(data, name, declaration, optional, pool, size, valid):
    kind, options = declaration[0], (declaration[1] if len(declaration) > 1 else {})
    if isinstance(kind, (list, tuple)):
        junk = st.text("abcxyz-_.", min_size=1, max_size=8).map(lambda s: "no-such-" + s)
        return data.draw(st.sampled_from(CHOICES.get(name, list(kind))) if valid and kind else junk)
    if kind in ("INT", "FLOAT"):
        good, bad = _number_strategies(kind, options, name)
        return data.draw(good if valid else bad)
    if kind == "BOOLEAN":
        return data.draw(st.booleans() if valid else st.sampled_from([0, 1, "true", None]))
    if kind == "STRING":
        if not valid:
            return data.draw(st.sampled_from([None, 5, b"bytes"]))
        listed = st.sampled_from(STRINGS.get(name, ["", "text"]))
        return data.draw(st.one_of(listed, st.text(max_size=20)) if name in FREE_TEXT else listed)
    if kind == "IMAGE":
        if valid and optional and data.draw(st.booleans()):
            return None
        odd = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 40), st.integers(1, 40)))
        return data.draw(_image(size if data.draw(st.integers(0, 3)) else odd, valid))
    if kind == "MASK":
        return data.draw(_mask(size, valid))
    value = pool.get(kind)
    if valid:
        return None if optional and data.draw(st.booleans()) else value
    return _poisoned(value) if optional else data.draw(st.sampled_from([None, _poisoned(value)]))


def _check_result(node_id, cls, out):
    result = out["result"] if isinstance(out, dict) else out
    assert len(result) == len(cls.RETURN_TYPES), node_id
    is_list = getattr(cls, "OUTPUT_IS_LIST", (False,) * len(cls.RETURN_TYPES))
    for value, kind in ((v, k) for out_value, k, listed in zip(result, cls.RETURN_TYPES, is_list)
                        for v in (out_value if listed else [out_value])):
        assert first_nonfinite(value, kind) is None, f"{node_id} returned a non-finite {kind}"
        if kind == "IMAGE":
            assert value.ndim == 4 and value.shape[-1] == 3 and value.shape[0] >= 1, node_id
            assert 0 <= float(value.min()) and float(value.max()) <= 1, node_id
        elif kind == "FLOAT":
            assert isinstance(value, float) and math.isfinite(value), node_id
        elif kind == "STRING":
            assert isinstance(value, str), node_id


@pytest.fixture(scope="module")
def pool(tiny_models):
    return pack_values(tiny_models)


TENSOR_TYPES = ("BIGGAN_LATENT", "KANDINSKY22_IMAGE_EMBEDS", "KANDINSKY22_TEXT_EMBEDS", "OVI_REFERENCE_STATS")
"""Custom types that carry tensors (so they can be broken with a NaN even when optional)."""


def _inputs(cls):
    spec = cls.INPUT_TYPES()
    return [(name, decl, section == "optional") for section in ("required", "optional")
            for name, decl in (spec.get(section) or {}).items()]


def _breakable(declaration, optional) -> bool:
    kind = declaration[0]
    known = isinstance(kind, (list, tuple)) or kind in ("INT", "FLOAT", "BOOLEAN", "STRING", "IMAGE", "MASK")
    return known or not optional or kind in TENSOR_TYPES


BROKEN = [(node_id, name) for node_id in sorted(NODE_CLASS_MAPPINGS)
          for name, decl, optional in _inputs(NODE_CLASS_MAPPINGS[node_id]) if _breakable(decl, optional)]


def _run(node_id, node, pool, data, broken):
    """Draw every input (``broken`` from outside its declaration), call the node, check what it did."""
    cls = NODE_CLASS_MAPPINGS[node_id]
    inputs = _inputs(cls)
    size = data.draw(st.tuples(st.sampled_from([2, 1, 3]), st.integers(32, 40), st.integers(32, 40)))
    kwargs = {name: _draw_value(data, name, decl, optional, pool, size, name != broken)
              for name, decl, optional in inputs}
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k == broken}
    try:
        with torch.inference_mode():
            out = getattr(node, cls.FUNCTION)(**kwargs)
    except FuseDreamError as exc:
        unlisted = {n for n, decl, _ in inputs if isinstance(decl[0], (list, tuple)) and not decl[0]}
        named = {broken} | unlisted  # an empty model list: no valid choice exists for it either
        assert broken is None or any(n in str(exc) for n in named), f"{node_id}: broke {broken!r}: {exc}"
        return
    assert broken is None, f"{node_id} accepted the broken input {broken!r} = {kwargs[broken]!r}"
    _check_result(node_id, cls, out)


@pytest.mark.parametrize("node_id,broken", BROKEN)
def test_an_input_outside_its_declaration_is_refused_by_name(node_id, broken, pool):
    node = NODE_CLASS_MAPPINGS[node_id]()

    @settings(max_examples=5, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        _run(node_id, node, pool, data, broken)

    run()


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_inputs_within_their_declaration_give_a_valid_result_or_a_fusedream_error(node_id, pool):
    node = NODE_CLASS_MAPPINGS[node_id]()  # ComfyUI keeps one instance per node (the trained prior caches on it)

    @settings(max_examples=EXAMPLES.get(node_id, DEFAULT_EXAMPLES), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        _run(node_id, node, pool, data, None)

    run()


BASELINE = {"FuseDreamCompositionGridSearch": {"scales": "0.5", "positions": "center", "background": "BIGGAN_LATENT"},
            "FuseDreamCompositionOptimizer": {"background": "BIGGAN_LATENT"},
            "FuseDreamOVIReferenceStatsBuild": {"images": torch.rand(2, 32, 32, 3)},
            "FuseDreamPoissonBlend": {"foreground": torch.rand(1, 32, 32, 3), "background": torch.rand(1, 32, 32, 3),
                                      "mask": torch.zeros(1, 32, 32).index_fill_(1, torch.arange(8, 20), 1.0)},
            "FuseDreamKandinsky22EmbedsMix": {"embeds_3": "KANDINSKY22_IMAGE_EMBEDS"},
            "FuseDreamKandinsky22EncodersLoader": {"prior_folder": kandinsky.PRIOR_NAME},
            "FuseDreamKandinsky22DecoderLoader": {"decoder_folder": kandinsky.DECODER_NAME}}
"""Per node, what a cheap valid run connects beyond the defaults (a custom type's name means the pool's value)."""


@pytest.mark.parametrize("node_id", sorted(set(NODE_CLASS_MAPPINGS) - NO_VALID_CHOICE))
def test_every_node_runs_on_cheap_valid_inputs_and_returns_finite_outputs(node_id, pool):
    """The valid corner of the property test, always reached: defaults, the cheap end of costly counts."""
    from testkit.workflows import widget_defaults

    cls = NODE_CLASS_MAPPINGS[node_id]
    spec = cls.INPUT_TYPES()
    kwargs = widget_defaults(cls)
    for name, (kind, options, *_) in spec["required"].items():
        if isinstance(kind, str) and kind in pool:
            kwargs[name] = pool[kind]
        elif kind == "IMAGE":
            kwargs[name] = torch.rand(1, 32, 32, 3)
        elif name in CHEAP:
            kwargs[name] = max(options.get("min", 1), min(CHEAP[name], kwargs[name]))
    kwargs.update({k: pool.get(v, v) if isinstance(v, str) else v for k, v in BASELINE.get(node_id, {}).items()})
    kwargs.update({k: CHOICES[k][0] for k in CHOICES if k in kwargs})
    with torch.inference_mode():
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
    _check_result(node_id, cls, out)

"""The Kandinsky 2.2 / OVI nodes run as ComfyUI runs them (inside inference mode), on the fixture command's models."""
import glob
import json
import os

import pytest
import torch
from PIL import Image

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures.kandinsky import DECODER_NAME, EMBED_DIM, PRIOR_NAME
from fusedream_pack.nodes import NODE_CLASS_MAPPINGS
from fusedream_pack.nodes.kandinsky import NODE_CLASS_MAPPINGS as KANDINSKY_NODES
from testkit import ROOT
from testkit.workflows import load, run_node, workflow_problems

call = run_node


@pytest.fixture(scope="module")
def encoders(tiny_models):
    return call("FuseDreamKandinsky22EncodersLoader", prior_folder=PRIOR_NAME)["result"][0]


@pytest.fixture(scope="module")
def decoder(tiny_models):
    return call("FuseDreamKandinsky22DecoderLoader", decoder_folder=DECODER_NAME)["result"][0]


@pytest.fixture(scope="module")
def texts(encoders):
    return call("FuseDreamKandinsky22TextEncode", encoders=encoders, prompt="blue old car on a beach",
                negative_prompt="blurry")["result"]


@pytest.fixture(scope="module")
def negative(encoders):
    return call("FuseDreamKandinsky22NegativeEmbeds", encoders=encoders, mode="zero image")["result"][0]


def decode(decoder, embeds, negative, **kw):
    out = call("FuseDreamKandinsky22Decoder", decoder=decoder, image_embeds=embeds, negative_embeds=negative,
               steps=2, width=64, height=64, **kw)
    return out


def test_the_example_workflows_name_existing_nodes_with_valid_widgets(tiny_models):
    paths = sorted(glob.glob(os.path.join(ROOT, "example_workflows", "*Kandinsky 2.2.json")))
    assert [os.path.basename(p) for p in paths] == ["OVI – Kandinsky 2.2.json", "TextEmb – Kandinsky 2.2.json"]
    for path in paths:
        workflow = load(path)
        assert workflow_problems(workflow, NODE_CLASS_MAPPINGS) == [], path
        assert {n["type"] for n in workflow["nodes"]} >= {"FuseDreamKandinsky22Decoder", "SaveImage"}


def test_ovi_graph_runs_end_to_end_and_reports_its_cosine_series(encoders, decoder, texts, negative):
    text, _ = texts
    out = call("FuseDreamOVIPrior", encoders=encoders, text=text, steps=6, unique_id="7")
    embeds, cosine, history, frames = out["result"]
    assert embeds.shape == (1, EMBED_DIM) and embeds.device.type == "cpu"
    assert isinstance(cosine, float) and frames.shape == (1, 1, 1, 3)
    history = json.loads(history)
    assert len(history["cosine"]) == 6 and history["cosine"][history["best_step"] - 1] == pytest.approx(cosine, abs=1e-5)
    run = out["ui"]["fusedream_series"][0]
    assert run["steps"] == [1, 2, 3, 4, 5, 6] and max(run["series"]["cosine"]) == pytest.approx(cosine, abs=1e-6)
    decoded = decode(decoder, embeds, negative, unique_id="8")
    image, frames = decoded["result"]
    assert image.shape == (1, 64, 64, 3) and 0 <= image.min() and image.max() <= 1
    assert frames.shape == image.shape and (frames - image).abs().max() <= 1 / 255 + 1e-6


def test_textemb_graph_runs_and_the_same_seed_reproduces_the_image(decoder, texts, negative):
    (embeds,) = call("FuseDreamKandinsky22TextEmbPrior", text=texts[0])["result"]
    assert torch.equal(embeds, texts[0].text_embeds.cpu())
    a = decode(decoder, embeds, negative, seed=3)["result"][0]
    b = decode(decoder, embeds, negative, seed=3)["result"][0]
    c = decode(decoder, embeds, negative, seed=4)["result"][0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_trained_prior_gives_embeddings_and_its_negative(encoders, texts):
    embeds, negative_embeds = call("FuseDreamKandinsky22TrainedPrior", encoders=encoders, text=texts[0],
                                   negative_text=texts[1], steps=2, seed=1)["result"]
    again, _ = call("FuseDreamKandinsky22TrainedPrior", encoders=encoders, text=texts[0],
                    negative_text=texts[1], steps=2, seed=1)["result"]
    assert embeds.shape == negative_embeds.shape == (1, EMBED_DIM) and torch.equal(embeds, again)


def test_the_trained_prior_refuses_one_step_when_called_directly(encoders, texts):
    """The node's widget starts at 2, but a script calling the op with 1 got a ZeroDivisionError from the UnCLIP
    scheduler (seen failing with the op's check at ``steps >= 1``)."""
    from fusedream_pack.fusedream_ops.models.kandinsky import load_trained_prior
    from fusedream_pack.fusedream_ops.ovi.baselines import run_trained_prior

    prior = load_trained_prior(encoders.folder)
    with pytest.raises(FuseDreamError, match="steps must be at least 2"):
        run_trained_prior(encoders, prior, texts[0].prompts, steps=1)


def test_negative_modes_zero_tensor_and_zero_image(encoders, negative):
    (zeros,) = call("FuseDreamKandinsky22NegativeEmbeds", encoders=encoders, mode="zero tensor")["result"]
    assert torch.equal(zeros, torch.zeros(1, EMBED_DIM))
    assert torch.allclose(negative, encoders.zero_image_embed().cpu()) and negative.abs().sum() > 0


def test_image_prompt_mix_and_clip_vision_output_give_embeddings(encoders, texts):
    images = torch.rand(2, 48, 40, 3)
    (image_embeds,) = call("FuseDreamKandinsky22ImageEncode", encoders=encoders, image=images)["result"]
    assert image_embeds.shape == (2, EMBED_DIM)

    class ClipVisionOutput:  # what core's CLIPVisionEncode returns: attribute and item access
        def __init__(self, e):
            self.image_embeds = e

        def __getitem__(self, key):
            return getattr(self, key)

    (converted,) = call("FuseDreamKandinsky22FromCLIPVision",
                        clip_vision_output=ClipVisionOutput(image_embeds[:1]))["result"]
    assert torch.equal(converted, image_embeds[:1])
    text = texts[0].text_embeds.cpu()
    (mixed,) = call("FuseDreamKandinsky22EmbedsMix", embeds_1=text, weight_1=0.25, embeds_2=converted,
                    weight_2=0.75)["result"]
    assert torch.allclose(mixed, 0.25 * text + 0.75 * converted)
    with pytest.raises(FuseDreamError, match="embeds_2 has 7 dimensions"):
        call("FuseDreamKandinsky22EmbedsMix", embeds_1=text, weight_1=1.0, embeds_2=torch.zeros(1, 7), weight_2=1.0)


def test_reference_statistics_are_built_saved_and_reloaded_then_constrain_ovi(encoders, texts, tmp_path, tiny_models,
                                                                               monkeypatch):
    monkeypatch.setenv("FUSEDREAM_EXTRA_ROOTS", str(tmp_path))
    for i in range(3):
        Image.new("RGB", (40 + 8 * i, 36), (60 * i, 120, 200)).save(tmp_path / f"ref{i}.jpg")
    stats, count = call("FuseDreamOVIReferenceStatsBuild", encoders=encoders, folder=str(tmp_path),
                        save_name="test-reference", images=torch.rand(2, 32, 32, 3))["result"]
    assert count == 5 and os.path.isfile(os.path.join(tiny_models, "ovi_reference", "test-reference.safetensors"))
    loaded, loaded_count = call("FuseDreamOVIReferenceStatsLoad", file="test-reference.safetensors")["result"]
    assert loaded_count == 5 and torch.equal(loaded.bank, stats.bank)
    out = call("FuseDreamOVIPrior", encoders=encoders, text=texts[0], steps=3, lambda_n=0.5,
               reference_stats=loaded)
    assert "nn_cosine" in out["ui"]["fusedream_series"][0]["series"]


def test_empty_reference_folder_and_bad_save_name_are_clear_errors(encoders, tmp_path, monkeypatch):
    monkeypatch.setenv("FUSEDREAM_EXTRA_ROOTS", str(tmp_path))
    with pytest.raises(FuseDreamError, match="holds no images"):
        call("FuseDreamOVIReferenceStatsBuild", encoders=encoders, folder=str(tmp_path))
    with pytest.raises(FuseDreamError, match="give a reference image folder or connect images"):
        call("FuseDreamOVIReferenceStatsBuild", encoders=encoders, folder="  ")
    with pytest.raises(FuseDreamError, match="save_name must be a plain file name"):
        call("FuseDreamOVIReferenceStatsBuild", encoders=encoders, folder="", images=torch.rand(2, 32, 32, 3),
             save_name="../escape")


def test_decoder_refuses_an_embedding_of_another_width_and_sizes_off_the_64_grid(decoder, negative):
    with pytest.raises(FuseDreamError, match="image_embeds has 1280 dimensions but the decoder's UNet expects 32"):
        decode(decoder, torch.zeros(1, 1280), negative)
    with pytest.raises(FuseDreamError, match="width must be a multiple of 64.*got 100; use 64 or 128"):
        call("FuseDreamKandinsky22Decoder", decoder=decoder, image_embeds=negative, negative_embeds=negative,
             steps=1, width=100, height=64)


def test_every_kandinsky_node_is_registered_with_a_fusedream_id_and_category():
    for node_id, cls in KANDINSKY_NODES.items():
        assert NODE_CLASS_MAPPINGS[node_id] is cls
        assert node_id.startswith("FuseDream") and cls.CATEGORY == "FuseDream/kandinsky22"

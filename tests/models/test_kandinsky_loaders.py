"""Kandinsky 2.2 loaders: diffusers-layout folders written with the real classes, loaded back strictly and offline."""
import os
import shutil

import pytest
import torch

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures import kandinsky as fixtures
from fusedream_pack.fusedream_ops.models.kandinsky import (as_image_embeds, load_decoder, load_encoders,
                                                           load_trained_prior)
from testkit import kandinsky_models as km


def copy_of(folder, tmp_path):
    dst = tmp_path / os.path.basename(folder)
    shutil.copytree(folder, dst)
    return str(dst)


def test_encoders_load_frozen_with_the_projection_width_and_image_size():
    enc = km.encoders()
    assert enc.embed_dim == fixtures.EMBED_DIM and enc.image_size == 32
    assert not any(p.requires_grad for p in enc.image_encoder.parameters())
    assert not enc.text_encoder.training


def test_tokenizer_written_from_open_clip_vocabulary_gives_open_clip_token_ids():
    import open_clip

    text = "Blue old car on a beach, 1960s photo!"
    ids = km.encoders().tokenizer([text], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    reference = open_clip.get_tokenizer("ViT-B-32")([text])[0]
    n = int((reference != 0).sum())
    assert ids.shape[0] == 77 and torch.equal(ids[:n], reference[:n])


def test_text_encoding_matches_the_text_tower_called_directly():
    enc = km.encoders()
    text = enc.encode_text(["blue old car on a beach"])
    ids = enc.tokenizer(["blue old car on a beach"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    direct = enc.text_encoder(ids).text_embeds
    assert text.text_embeds.shape == (1, fixtures.EMBED_DIM) and text.hidden_states.shape == (1, 77, 32)
    assert torch.allclose(text.text_embeds, direct, atol=1e-6)
    assert text.mask[0, :8].all() and not text.mask[0, 8:].any()


def test_zero_image_embedding_is_the_encoder_on_an_all_zero_normalized_image():
    enc = km.encoders()
    direct = enc.image_encoder(pixel_values=torch.zeros(1, 3, 32, 32)).image_embeds
    assert torch.allclose(enc.zero_image_embed(), direct, atol=1e-6)


def test_images_of_different_sizes_are_resized_cropped_and_encoded_together():
    enc = km.encoders()
    a, b = torch.rand(1, 3, 40, 64), torch.rand(1, 3, 32, 32)
    together = enc.encode_images([a, b])
    assert together.shape == (2, fixtures.EMBED_DIM)
    assert torch.allclose(together[1:], enc.encode_images(b), atol=1e-5)


def test_loading_inside_inference_mode_gives_weights_usable_for_backward():
    with torch.inference_mode():
        enc = load_encoders(km.prior_folder())
    p = next(enc.image_encoder.parameters())
    assert not p.is_inference()


def test_decoder_loads_unet_movq_and_scheduler():
    dec = km.decoder()
    assert dec.embed_dim == fixtures.EMBED_DIM and dec.movq_scale == 8
    assert type(dec.make_scheduler()).__name__ == "DDPMScheduler"


def test_trained_prior_loads_from_the_prior_folder():
    prior = load_trained_prior(km.prior_folder())
    assert prior.prior.config.embedding_dim == fixtures.EMBED_DIM
    assert prior.scheduler_config["_class_name"] == "UnCLIPScheduler"


@pytest.mark.parametrize("sub,loader", [("text_encoder", load_encoders), ("tokenizer", load_encoders),
                                        ("movq", load_decoder), ("scheduler", load_decoder)])
def test_missing_component_folder_is_named_in_the_error(tmp_path, sub, loader):
    src = km.prior_folder() if loader is load_encoders else km.decoder_folder()
    folder = copy_of(src, tmp_path)
    shutil.rmtree(os.path.join(folder, sub))
    with pytest.raises(FuseDreamError, match=f"no '{sub}/' subfolder"):
        loader(folder)


def test_missing_prior_weights_are_named_when_the_trained_prior_is_asked_for(tmp_path):
    folder = copy_of(km.prior_folder(), tmp_path)
    shutil.rmtree(os.path.join(folder, "prior"))
    load_encoders(folder)  # OVI and TextEmb need no prior/
    with pytest.raises(FuseDreamError, match="no 'prior/' subfolder"):
        load_trained_prior(folder)


@pytest.mark.parametrize("source,checkpoint,dropped,loader,match", [
    (km.prior_folder, ("image_encoder", "model.safetensors"), "visual_projection.weight", load_encoders,
     "missing keys.*visual_projection.weight"),
    (km.decoder_folder, ("unet", "diffusion_pytorch_model.safetensors"), None, load_decoder, "unet"),
], ids=["image_encoder", "unet"])
def test_truncated_checkpoint_is_an_error(tmp_path, source, checkpoint, dropped, loader, match):
    """A checkpoint without one tensor (``dropped``, or its first by name) is refused with a named error: the missing
    key for the image encoder, the component for the UNet."""
    from safetensors.torch import load_file, save_file

    folder = copy_of(source(), tmp_path)
    path = os.path.join(folder, *checkpoint)
    state = load_file(path)
    del state[dropped or sorted(state)[0]]
    save_file(state, path)
    with pytest.raises(FuseDreamError, match=match):
        loader(folder)


def test_a_folder_holding_only_the_fp16_variant_loads(tmp_path):
    folder = copy_of(km.decoder_folder(), tmp_path)
    movq = os.path.join(folder, "movq")
    os.rename(os.path.join(movq, "diffusion_pytorch_model.safetensors"),
              os.path.join(movq, "diffusion_pytorch_model.fp16.safetensors"))
    decoder = load_decoder(folder)
    reference = km.decoder().movq.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in decoder.movq.state_dict().items())


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FuseDreamError, match="does not exist"):
        load_encoders(str(tmp_path / "nowhere"))


def test_clip_vision_output_like_objects_give_their_image_embeds():
    class Output:
        def __init__(self):
            self.image_embeds = torch.ones(2, 5)

        def __getitem__(self, key):
            return getattr(self, key)

    assert torch.equal(as_image_embeds(Output()), torch.ones(2, 5))
    assert as_image_embeds(torch.ones(5)).shape == (1, 5)
    with pytest.raises(FuseDreamError, match="image_embeds must be"):
        as_image_embeds("not an embedding")

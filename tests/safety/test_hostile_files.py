"""Hostile files, folders, configs and names (issue 19): links leading out of allowed folders, configs asking for the
impossible, image bombs, huge prompts and names holding control characters. Every hostile file is built here in a tmp
folder next to real tiny checkpoints written by ``fusedream_ops.fixtures``.

How each test was seen to fail: the fix it names was reverted (or disabled) on a scratch copy and the test run; each
docstring says what was reverted and what happened.
"""
import json
import logging
import os
import re
import shutil
import struct
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.nn.modules import module as torch_module

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures.biggan_clip import TINY_CLIP_CONFIG, tiny_clip
from fusedream_pack.fusedream_ops.models.biggan import load_biggan
from fusedream_pack.fusedream_ops.models.clip import load_clip, save_clip
from fusedream_pack.fusedream_ops.models.kandinsky import load_decoder
from fusedream_pack.fusedream_ops.safety.image_files import read_image
from fusedream_pack.fusedream_ops.safety.scheduler_config import MAX_TRAIN_TIMESTEPS, require_scheduler_config
from fusedream_pack.fusedream_ops.validation.names import require_file_name
from fusedream_pack.fusedream_ops.validation.prompts import MAX_PROMPT_CHARS, parse_prompts
from fusedream_pack.nodes import comfy
from testkit import kandinsky_models as km
from testkit.workflows import run_node

SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def server(tmp_path, monkeypatch, tiny_models):
    """A server layout: models/ (open_clip, biggan, kandinsky22), input/, and an outside folder with real files."""
    models, outside = tmp_path / "models", tmp_path / "outside"
    for folder in (models / "open_clip", models / "biggan", tmp_path / "input", outside):
        folder.mkdir(parents=True)
    shutil.copytree(os.path.join(tiny_models, "biggan", "biggan-deep-256"), models / "biggan" / "g")
    shutil.copytree(os.path.join(tiny_models, "biggan", "biggan-deep-256"), outside / "g")
    shutil.copytree(km.decoder_folder(), models / "kandinsky22" / "decoder")
    shutil.copytree(km.decoder_folder(), outside / "decoder")
    save_clip(tiny_clip(seed=1), str(models / "open_clip" / "c.safetensors"), TINY_CLIP_CONFIG)
    save_clip(tiny_clip(seed=1), str(outside / "c.safetensors"), TINY_CLIP_CONFIG)
    monkeypatch.setitem(comfy._fallback_roots, "root", [str(models)])
    monkeypatch.chdir(tmp_path)  # outside ComfyUI the input folder is ./input
    monkeypatch.delenv("FUSEDREAM_EXTRA_ROOTS", raising=False)
    return tmp_path


def _relink(path, target):
    os.remove(path) if os.path.isfile(path) or os.path.islink(path) else shutil.rmtree(path)
    os.symlink(target, path)


# ---------------------------------------------------------------- links inside allowed folders
def test_a_model_entry_whose_files_link_outside_is_refused_and_loads_once_the_owner_allows_the_target(server,
                                                                                                    monkeypatch):
    """Reverted: loaders opening the entry's files without contained_file / require_tree_contained. All three
    linked entries then loaded (the BigGAN weights, the CLIP sidecar, the decoder's unet config from outside)."""
    models, outside = server / "models", server / "outside"
    _relink(models / "biggan" / "g" / "model.safetensors", outside / "g" / "model.safetensors")
    _relink(models / "open_clip" / "c.json", outside / "c.json")
    _relink(models / "kandinsky22" / "decoder" / "unet" / "config.json", outside / "decoder" / "unet" / "config.json")
    cases = [("FuseDreamBigGANLoader", {"checkpoint": "g"}, "g/model.safetensors"),
             ("FuseDreamCLIPLoader", {"checkpoint": "c.safetensors", "architecture": "auto"}, "c.json"),
             ("FuseDreamKandinsky22DecoderLoader", {"decoder_folder": "decoder"}, "unet/config.json")]
    for node, inputs, file in cases:
        with pytest.raises(FuseDreamError, match=rf"{file}' is a symbolic link leading outside the allowed"):
            run_node(node, **inputs)
    monkeypatch.setenv("FUSEDREAM_EXTRA_ROOTS", str(outside))  # the server owner's opt-in
    for node, inputs, _ in cases:
        run_node(node, **inputs)


def test_a_linked_sub_folder_inside_a_model_folder_is_walked_and_one_leading_out_is_refused(server):
    """Reverted: require_tree_contained not following linked sub-folders (a plain os.walk): the movq/ link to a folder
    inside models/ hid a weights file linking outside, and the decoder loaded it."""
    models, outside = server / "models", server / "outside"
    decoder = models / "kandinsky22" / "decoder"
    shutil.move(str(decoder / "movq"), models / "kandinsky22" / "shared-movq")
    os.symlink(models / "kandinsky22" / "shared-movq", decoder / "movq")
    assert load_decoder(str(decoder), roots=[str(models / "kandinsky22")]).movq_scale == 8  # links inside: fine
    _relink(models / "kandinsky22" / "shared-movq" / "diffusion_pytorch_model.safetensors",
            outside / "decoder" / "movq" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(FuseDreamError, match=r"movq/diffusion_pytorch_model\.safetensors' is a symbolic link"):
        load_decoder(str(decoder), roots=[str(models / "kandinsky22")])
    _relink(decoder / "movq", outside / "decoder" / "movq")
    with pytest.raises(FuseDreamError, match=r"decoder/movq' is a symbolic link leading outside"):
        load_decoder(str(decoder), roots=[str(models / "kandinsky22")])


def _images(folder, count, seed):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (20, 20), ((seed * 70 + 40 * i) % 256, 90, 160)).save(folder / f"{seed}-{i}.png")


def test_image_folders_skip_members_and_sub_folders_linking_outside_input_with_a_logged_reason(server, caplog):
    """Reverted: the folder readers listing with os.listdir/os.path.isfile (no contained_members). The Gaussian then
    had 2 classes (the linked outside folder was one) and the statistics counted 3 images, not 2."""
    cats, outside = server / "input" / "cats", server / "outside"
    _images(cats, 2, seed=0)
    _images(outside / "private", 3, seed=1)
    os.symlink(outside / "private" / "1-0.png", cats / "leak.png")
    os.symlink(outside / "private", cats / "linked-class")
    with caplog.at_level(logging.WARNING, logger="FuseDream"):
        (gaussian,) = run_node("FuseDreamReferenceImageGaussian", folder="cats", small_size=4)["result"]
        stats, count = run_node("FuseDreamOVIReferenceStatsBuild", encoders=km.encoders(), folder="cats",
                                save_name="")["result"]
    assert gaussian.means.shape[0] == 1 and count == 2
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "leak.png" in skipped and "linked-class" in skipped
    os.remove(cats / "leak.png")
    os.remove(cats / "linked-class")
    (plain,) = run_node("FuseDreamReferenceImageGaussian", folder="cats", small_size=4)["result"]
    assert torch.equal(plain.means, gaussian.means)


# ---------------------------------------------------------------- configs that ask for the impossible
class ModulesBuilt:
    """Counts the modules registered while it is active: how far a loader got building a model."""

    def __enter__(self):
        self.count = 0

        def hook(module, name, submodule):
            self.count += 1

        self.handle = torch_module.register_module_module_registration_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _copy_with_config(source, destination, config: str, **fields):
    """A copy of the model folder ``source`` at ``destination`` whose JSON file ``config`` has ``fields`` set."""
    folder = shutil.copytree(source, destination)
    path = folder / config
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return folder


def test_a_clip_sidecar_claiming_100000_layers_is_refused_by_field_before_anything_is_built(tmp_path):
    """Reverted: the require_sizes_match call in load_clip. The sidecar then went to the meta build, which the budget
    stopped after 456 modules with a message naming a module rather than the field (and the count check failed)."""
    path = str(tmp_path / "c.safetensors")
    save_clip(tiny_clip(), path, {**TINY_CLIP_CONFIG, "vision_cfg": {**TINY_CLIP_CONFIG["vision_cfg"],
                                                                     "layers": 100_000}})
    with ModulesBuilt() as built, pytest.raises(FuseDreamError, match=r"c\.json' does not match its checkpoint: "
                                                                      r"vision_cfg\.layers is 100000 but the "
                                                                      r"checkpoint has 2"):
        load_clip("auto", path)
    assert built.count == 0


def test_sizes_no_field_check_covers_stop_the_meta_build_within_twice_the_checkpoint(tmp_path):
    """A CLIP mlp_ratio and a UNet layers_per_block are compared with nothing before the build; the budget stops it.
    Reverted: the budget's two limits. The CLIP build then finished on the meta device (wide layers cost nothing
    there) and failed only at the shape comparison, naming no field. The UNet's meta build registers about 55
    modules per layer (measured: 10,906 modules and 16 s for layers_per_block=200 on the loaded test machine), so
    20,000 means about a million modules and half an hour; measured at 200, not run at 20,000."""
    path = str(tmp_path / "c.safetensors")
    save_clip(tiny_clip(), path, {**TINY_CLIP_CONFIG, "vision_cfg": {**TINY_CLIP_CONFIG["vision_cfg"],
                                                                     "mlp_ratio": 100_000}})
    with pytest.raises(FuseDreamError, match=r"c\.json' describes a model larger than its checkpoint.*mlp_ratio"):
        load_clip("auto", path)
    decoder = _copy_with_config(km.decoder_folder(), tmp_path / "decoder", "unet/config.json", layers_per_block=20_000)
    with ModulesBuilt() as built, pytest.raises(FuseDreamError, match=r"unet/config\.json' describes a model larger "
                                                                      r"than its checkpoint.*layers_per_block=20000"):
        load_decoder(str(decoder))
    assert built.count < 20_000


def test_a_kandinsky_tower_config_claiming_100000_layers_names_the_field(tmp_path):
    """Reverted: the clip_tower_size_checks call in _meta_model. The config then went to the meta build (stopped by
    the budget, naming a module instead of num_hidden_layers)."""
    prior = _copy_with_config(km.prior_folder(), tmp_path / "prior", "text_encoder/config.json",
                              num_hidden_layers=100_000)
    from fusedream_pack.fusedream_ops.models.kandinsky import load_encoders

    with ModulesBuilt() as built, pytest.raises(FuseDreamError, match=r"text_encoder/config\.json' does not match its "
                                                                      r"checkpoint: num_hidden_layers is 100000"):
        load_encoders(str(prior))
    assert built.count < 1000  # the image tower was built; the text tower was not


def test_a_biggan_config_with_a_huge_block_count_is_a_named_error_not_a_raw_value_error(tmp_path, tiny_models):
    """Reverted: the MAX_UPSAMPLINGS guard in _resolution_hint. Formatting 4·2^20000 then raised Python's own
    ValueError (Exceeds the limit for integer string conversion), which is not a FuseDreamError; with 10,000 blocks
    the message carried a 3,000-digit resolution."""
    folder = shutil.copytree(os.path.join(tiny_models, "biggan", "biggan-deep-256"), tmp_path / "g")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "layers": [[True, 1, 1]] * 20_000}))
    with pytest.raises(FuseDreamError, match=r"the config has 20000 blocks.*20000 up-sampling blocks"):
        load_biggan(str(folder))
    (folder / "config.json").write_text(json.dumps({**config, "channel_width": 4096}))
    with pytest.raises(FuseDreamError, match=r"config\.json' does not match the checkpoint.*channel_width is 4096"):
        load_biggan(str(folder))


@pytest.mark.parametrize("timesteps", [300_000_000, 10**12, 0, 2.5, "1000"])
def test_a_scheduler_config_asking_for_huge_tables_is_refused_naming_file_and_field(tmp_path, timesteps):
    """Reverted: require_scheduler_config in load_decoder. 3e8 then allocated gigabytes of noise tables, 1e12 raised
    torch's own RuntimeError, 2.5 and "1000" raw TypeErrors from diffusers."""
    decoder = _copy_with_config(km.decoder_folder(), tmp_path / "decoder", "scheduler/scheduler_config.json",
                                num_train_timesteps=timesteps)
    with pytest.raises(FuseDreamError, match=r"scheduler_config\.json': num_train_timesteps must be an integer"):
        load_decoder(str(decoder))


@pytest.mark.parametrize("fields", [
    {"beta_schedule": "cosine"},  # not a DDPM schedule name: diffusers' NotImplementedError
    {"_class_name": "UnCLIPScheduler", "beta_schedule": "linear"},  # UnCLIP only has squaredcos_cap_v2: ValueError
    {"_class_name": "UnCLIPScheduler", "variance_type": "learned"},  # ValueError
])
def test_a_scheduler_config_diffusers_refuses_is_a_named_error_before_the_weights_load(tmp_path, fields):
    """Reverted: the try/except in decoder_scheduler and its early call in load_decoder. diffusers' own
    NotImplementedError/ValueError then came out after the UNet and MoVQ were built."""
    decoder = _copy_with_config(km.decoder_folder(), tmp_path / "decoder", "scheduler/scheduler_config.json", **fields)
    with ModulesBuilt() as built, pytest.raises(FuseDreamError, match=r"scheduler_config\.json' cannot make a "):
        load_decoder(str(decoder))
    assert built.count == 0


@settings(max_examples=200, **SETTINGS)
@given(st.dictionaries(st.sampled_from(["num_train_timesteps", "beta_start", "beta_end", "steps_offset",
                                        "trained_betas", "clip_sample_range", "prediction_type"]),
                       st.one_of(st.integers(-10**13, 10**13), st.floats(), st.text(max_size=70), st.none(),
                                 st.lists(st.floats(-1, 2), max_size=30))))
def test_any_scheduler_config_builds_a_scheduler_or_is_a_named_error(fields):
    """Reverted: the bounds of require_scheduler_config (returning the config unchecked). Hypothesis then found
    configs whose DDPMScheduler construction raised TypeError/ValueError/RuntimeError or asked for 1e13 timesteps."""
    from diffusers import DDPMScheduler

    config = {k: v for k, v in fields.items() if v is not None}
    try:
        checked = require_scheduler_config(config, "'s.json'")
    except FuseDreamError as exc:
        assert "'s.json': " in str(exc) and any(k in str(exc) for k in config)
        return
    assert checked["num_train_timesteps"] <= MAX_TRAIN_TIMESTEPS
    scheduler = DDPMScheduler.from_config(checked)
    scheduler.set_timesteps(min(10, scheduler.config.num_train_timesteps))


# ---------------------------------------------------------------- image bombs
def png_declaring(path, width, height):
    """A real 1×1 palette PNG whose header (IHDR) is rewritten to declare ``width``×``height`` pixels: ~70 bytes."""
    Image.new("P", (1, 1)).save(path)
    data = bytearray(open(path, "rb").read())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    open(path, "wb").write(bytes(data))
    return path


def test_image_bombs_in_image_folders_are_refused_naming_the_file_before_decoding(server):
    """Reverted: the readers back on Image.open(...).convert. The 12000×12000 PNG then went to the decoder (raising
    only because its data is cut; a complete one takes 3 GB) and the 20000×20000 one raised PIL's own
    DecompressionBombError."""
    for name, side in (("big", 12_000), ("huge", 20_000)):
        folder = server / "input" / name
        _images(folder, 2, seed=2)
        png_declaring(folder / "bomb.png", side, side)
        for node, inputs in (("FuseDreamReferenceImageGaussian", {}),
                             ("FuseDreamOVIReferenceStatsBuild", {"encoders": km.encoders(), "save_name": ""})):
            with pytest.raises(FuseDreamError, match=rf"bomb\.png' declares ({side}×{side} pixels|too many)"):
                run_node(node, folder=name, **inputs)


def test_a_large_jpeg_is_decoded_at_a_fraction_of_its_size_when_the_use_allows(tmp_path):
    """Reverted: the draft() call in read_image. The 2000×1000 JPEG was then decoded whole and refused above the
    1-megapixel bound even though the use needs 16 px."""
    path = str(tmp_path / "photo.jpg")
    Image.new("RGB", (2000, 1000), (200, 40, 40)).save(path, quality=90)
    with pytest.raises(FuseDreamError, match=r"photo\.jpg' declares 2000×1000 pixels \(2\.0 megapixels\)"):
        read_image(path, max_pixels=1_000_000)
    small = read_image(path, shrink_to=16, max_pixels=1_000_000)
    assert 16 <= min(small.size) < 32 and small.size[0] == 2 * small.size[1]
    assert small.getpixel((3, 3))[0] > 150  # still the picture, not a blank


@settings(max_examples=60, **SETTINGS)
@given(st.integers(1, 60_000), st.integers(1, 60_000), st.sampled_from([None, 16, 224]))
def test_any_declared_png_size_is_read_or_refused_with_a_named_error_never_decoded_above_the_bound(tmp_path_factory,
                                                                                                  width, height,
                                                                                                  shrink_to):
    """Reverted: the pixel check in read_image. Declared sizes above the bound then reached the decoder (raising
    raw PIL errors or DecompressionBombError) instead of the size error."""
    path = png_declaring(str(tmp_path_factory.mktemp("png") / "x.png"), width, height)
    try:
        image = read_image(path, max_pixels=4_000_000, shrink_to=shrink_to)
    except FuseDreamError as exc:
        too_big = width * height > 4_000_000
        assert ("megapixels" in str(exc)) == too_big, (width, height, str(exc))
        assert "x.png" in str(exc)
        return
    assert width * height <= 4_000_000 and image.mode == "RGB"


# ---------------------------------------------------------------- huge prompts
class TokenizerSpy:
    """Forwards to a real tokenizer and remembers whether it was called."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)


def test_a_64kb_one_word_prompt_is_refused_before_any_tokenizer_on_every_path(tiny_scorer, tmp_path):
    """Reverted (with a 3,000-character word, to keep the reverted run short): require_prompt and the prompt field's
    bound. The objective node then accepted the word and tokenized it, which the issue measured at 52 s for 64 KB."""
    import copy

    word = "a" * 65_536
    scorer = copy.copy(tiny_scorer)
    scorer.tokenizer = TokenizerSpy(tiny_scorer.tokenizer)
    encoders = copy.copy(km.encoders())
    encoders.tokenizer = TokenizerSpy(encoders.tokenizer)
    attempts = [lambda: run_node("FuseDreamAugCLIPObjective", clip=scorer, prompt=word),
                lambda: run_node("FuseDreamKandinsky22TextEncode", encoders=encoders, prompt=word,
                                 negative_prompt=""),
                lambda: run_node("FuseDreamKandinsky22TextEncode", encoders=encoders, prompt="ok",
                                 negative_prompt=word),
                lambda: scorer.encode_text([word]),  # CLIPAG, batch runs and fine-tuning captions come this way
                lambda: encoders.encode_text([word]),  # OVI and the trained prior's text
                lambda: parse_prompts("a dog\n" + "b" * 1_000_000)]
    for attempt in attempts:
        with pytest.raises(FuseDreamError, match=r"characters long; at most") as err:
            attempt()
        assert len(str(err.value)) < 300
    assert scorer.tokenizer.calls == 0 and encoders.tokenizer.calls == 0


@settings(max_examples=100, **SETTINGS)
@given(st.text(st.characters(), max_size=80), st.integers(0, 3 * MAX_PROMPT_CHARS), st.integers(1, 300))
def test_any_prompt_is_parsed_or_refused_with_a_short_message(text, pad, lines):
    """Reverted: the bounds in parse_prompts (and quoted() in its messages). Long lines were then accepted (or their
    weight errors quoted thousands of characters)."""
    prompt = "\n".join([text + "x" * pad] * lines)
    try:
        parsed = parse_prompts(prompt)
    except FuseDreamError as exc:
        assert len(str(exc)) < 600, str(exc)[:200]
        return
    assert len(parsed) <= 256 and all(len(t) <= MAX_PROMPT_CHARS for t, _ in parsed)


# ---------------------------------------------------------------- names
@pytest.mark.parametrize("name, message", [
    ("cats\x1b[2J", "holds the control character"), ("a\nb", "holds the control character"),
    ("x\x00y", "holds the control character"), ("del\x7f", "holds the control character"),
    ("c1\x85", "holds the control character"), ("a/b", "without folders"), ("a\\b", "without folders"),
    ("../escape", "not starting with '.'"),
    ("CON", "reserved device name"), (".hidden", "not starting with '.'"), ("x" * 129, "at most 128")])
def test_a_bad_save_name_is_refused_before_any_work(name, message):
    """The folder does not exist, so an error about it means the work had started. Reverted: require_file_name at
    the top of the build (the old check came after embedding the images): the path-like, dotted and reserved names
    then got the folder's error. Control characters are refused twice before the work, by the shared input check and
    by require_file_name; reverting either one alone leaves them refused."""
    with pytest.raises(FuseDreamError, match=rf"save_name.*{re.escape(message)}"):
        run_node("FuseDreamOVIReferenceStatsBuild", encoders=km.encoders(), folder="no-such-folder", save_name=name)


@pytest.mark.parametrize("node, name", [("FuseDreamReferenceImageGaussian", "folder"),
                                        ("FuseDreamLatentSampler", "classes"),
                                        ("FuseDreamCompositionGridSearch", "positions")])
def test_every_single_line_input_refuses_control_characters_by_name(node, name, pool_for_names):
    """Reverted: require_text in check_value (back to an isinstance check). The folder then reached the resolver
    (refused, but as 'reference folder'), the class list the node (an AttributeError on the stand-in generator) and
    the positions their parser ('position must be one of …')."""
    from fusedream_pack.nodes import NODE_CLASS_MAPPINGS

    cls = NODE_CLASS_MAPPINGS[node]
    with pytest.raises(FuseDreamError, match=f"{name} holds the control character"):
        getattr(cls(), cls.FUNCTION)(**{**pool_for_names(cls), name: "dog\x1b[31m\x00"})


@pytest.fixture
def pool_for_names():
    """Valid-looking stand-ins for every input: only the shared input check runs (it refuses the name first)."""
    from testkit.workflows import widget_defaults

    def inputs(cls):
        spec = cls.INPUT_TYPES()
        values = {**{n: object() for n in spec["required"]}, **{n: None for n in spec.get("optional") or {}}}
        return {**values, **widget_defaults(cls)}

    return inputs


@settings(max_examples=300, **SETTINGS)
@given(st.text(st.characters(), max_size=200))
def test_any_text_is_a_plain_file_name_or_a_named_error(text):
    """Reverted: the control-character and separator checks of require_file_name. Names with newlines, escape
    sequences and slashes then came back as file names."""
    import unicodedata

    try:
        name = require_file_name(text, "save_name")
    except FuseDreamError as exc:
        assert "save_name" in str(exc) and len(str(exc)) < 400
        return
    assert name == name.strip() and name and not name.startswith(".") and len(name) <= 128
    assert not any(unicodedata.category(c) == "Cc" or c in '/\\:*?"<>|' for c in name)
    assert os.path.basename(name) == name

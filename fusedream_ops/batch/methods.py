"""The methods a batch run can use, as presets over the pack's own ops (nothing is re-implemented here).

| method | what runs | scores |
|---|---|---|
| ``fusedream`` | :func:`pipeline.generate`: top-k of M candidates + AugCLIP over the basis (Alg. 1) | ``augclip`` |
| ``augclip`` | the same with one random start (M = k = 1): the AugCLIP-only baseline | ``augclip`` |
| ``naive`` | one random start, plain CLIP cosine (no augmentation, one copy, no latent noise): eq. 2 | ``clip`` |
| ``clipag-pixels`` | :func:`pixel_synthesis.synthesize_pixels` from noise (CLIPAG's generator-free synthesis) | ``clip`` |
| ``ovi`` | :func:`ovi.optimize_ovi` on the Kandinsky 2.2 prior's towers, then the Kandinsky decoder | ``cosine`` |
| ``textemb`` | the text embedding as image embedding (OVI's baseline), then the Kandinsky decoder | — |

A :class:`MethodSpec` is plain data (method name, settings, model paths), so it travels to Ray workers and into
``run.json``; :func:`load_method` turns it into a :class:`LoadedMethod` holding the models on one device.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..core.errors import require
from ..fusedream.basis import BASIS_MODES
from ..validation import ranges

FUSEDREAM_FAMILY = ("fusedream", "augclip", "naive")
KANDINSKY_FAMILY = ("ovi", "textemb")
METHODS = FUSEDREAM_FAMILY + ("clipag-pixels",) + KANDINSKY_FAMILY

SINGLE_START = {"candidates": 1, "k": 1}
"""The baselines start from one random latent, as in the paper's Fig. 3–4 (and ``toyworld.measure``)."""


@dataclass(frozen=True)
class MethodSpec:
    method: str
    settings: dict = field(default_factory=dict)
    """Overrides of the method's settings (names as in its settings class, e.g. ``steps``, ``candidates``)."""
    models: dict = field(default_factory=dict)
    """Model files: ``biggan`` + ``clip`` (+ ``arch``) for the FuseDream family, ``clip`` (+ ``arch``) for
    ``clipag-pixels``, ``prior`` + ``decoder`` folders for ``ovi``/``textemb``."""

    def as_dict(self) -> dict:
        return {"method": self.method, "settings": dict(self.settings), "models": dict(self.models)}


def _settings_class(method: str):
    if method in FUSEDREAM_FAMILY:
        from ..fusedream.pipeline import FuseDreamSettings

        return FuseDreamSettings
    if method == "clipag-pixels":
        from ..clipag.synthesis import PixelSynthesisSettings

        return PixelSynthesisSettings
    return KandinskySettings


@dataclass(frozen=True)
class KandinskySettings:
    """OVI (paper: 1 token, 500 steps) and the Kandinsky 2.2 decoder's defaults (50 steps, guidance 4, 512²)."""

    num_tokens: int = 1
    steps: int = 500
    lr: float = 0.1
    decoder_steps: int = 50
    guidance: float = 4.0
    width: int = 512
    height: int = 512


OVI_ONLY = {"num_tokens", "steps", "lr"}

EXTRA_SETTINGS = {"clipag-pixels": {"size": None}}
"""Settings a method takes beyond its ops' settings class: the pixel image side (default: the CLIP input)."""

REQUIRED_MODELS = {"fusedream": ("biggan", "clip"), "augclip": ("biggan", "clip"), "naive": ("biggan", "clip"),
                   "clipag-pixels": ("clip",), "ovi": ("prior", "decoder"), "textemb": ("prior", "decoder")}


def setting_ranges(method: str) -> dict:
    """The valid values of ``method``'s numeric settings: the ranges of the nodes that run it
    (:mod:`..validation.ranges`), under the names the batch run uses."""
    if method in FUSEDREAM_FAMILY:
        return dict(ranges.FUSEDREAM)
    if method == "clipag-pixels":
        return {**ranges.CLIPAG_SYNTHESIS, **ranges.CLIPAG_SYNTHESIS_PYTHON_ONLY}
    decoder = {("decoder_steps" if name == "steps" else name): r for name, r in ranges.KANDINSKY_DECODER.items()}
    return {**decoder, **(ranges.OVI if method == "ovi" else {})}


CHOICES = {"mode": BASIS_MODES, "optimize_y": (False, True), "augment_init": (False, True)}
"""The settings that are not numbers, with their values."""
NONE_MEANS = {"threshold": "clamp to [0, 1]", "size": "the CLIP input size"}
"""Settings whose None is a valid choice."""


def _check_value(method: str, name: str, value):
    if value is None and name in NONE_MEANS:
        return None
    if name in CHOICES:
        require(any(value is c or (value == c and type(value) is type(c)) for c in CHOICES[name]),
                f"setting '{name}' of method '{method}' must be one of {', '.join(map(str, CHOICES[name]))}; got "
                f"{value!r}.")
        return value
    return setting_ranges(method)[name].check(f"setting '{name}'", value)


def check_spec(spec: MethodSpec) -> MethodSpec:
    """Refuse an unknown method, an unknown, fixed or out-of-range setting (the nodes' ranges), or a missing model
    file, before any model loads; returns the spec with its settings as checked (ints as int, numbers as float)."""
    require(spec.method in METHODS, f"method must be one of {', '.join(METHODS)}, got '{spec.method}'.")
    require(isinstance(spec.settings, dict), f"settings must be a dict, got {type(spec.settings).__name__}.")
    cls = _settings_class(spec.method)
    known = {f.name for f in dataclasses.fields(cls)} | set(EXTRA_SETTINGS.get(spec.method, {}))
    known.discard("seed")
    if spec.method == "textemb":
        known -= OVI_ONLY
    settings = {}
    for name, value in spec.settings.items():
        require(name in known, f"setting '{name}' does not apply to method '{spec.method}'; it takes: "
                               f"{', '.join(sorted(known))}.")
        if spec.method in ("augclip", "naive"):
            require(name not in SINGLE_START, f"method '{spec.method}' starts from one random latent, so "
                                              f"'{name}' is fixed to 1; use method 'fusedream' for top-k.")
        settings[name] = _check_value(spec.method, name, value)
    if spec.method == "fusedream":
        defaults = cls()
        k, candidates = settings.get("k", defaults.k), settings.get("candidates", defaults.candidates)
        require(k <= candidates, f"setting 'k' ({k}) must be at most 'candidates' ({candidates}): the basis is the "
                                 f"best k of the candidates.")
    if spec.method in KANDINSKY_FAMILY:
        from ..ovi.decode import check_size

        check_size(settings.get("width", KandinskySettings.width), settings.get("height", KandinskySettings.height))
    for name in REQUIRED_MODELS[spec.method]:
        path = spec.models.get(name)
        require(bool(path) and os.path.exists(path),
                f"method '{spec.method}' needs the {name} model, but '{path}' does not exist; give its file or "
                f"folder (see --models/--{name}).")
    if spec.method in KANDINSKY_FAMILY:
        from ..models.kandinsky import load_decoder_scheduler
        from ..ovi.decode import require_steps

        folder = spec.models["decoder"]
        require_steps(load_decoder_scheduler(folder), settings.get("decoder_steps", KandinskySettings.decoder_steps),
                      f"'{folder}/scheduler'")
    return dataclasses.replace(spec, settings=settings)


@dataclass
class LoadedMethod:
    """Models on one device plus ``make(prompt, seed) -> (image [1,3,H,W] in 0..1 on the CPU, scores)``."""

    spec: MethodSpec
    device: torch.device
    make: Callable[[str, int], tuple[torch.Tensor, dict]]
    settings: dict
    """Every setting the images are made with (defaults filled in), for the PNG metadata."""


def _fill(cls, overrides: dict, fixed: dict | None = None):
    values = {k: v for k, v in overrides.items() if k in {f.name for f in dataclasses.fields(cls)}}
    values.update(fixed or {})
    return cls(**values)


def load_method(spec: MethodSpec, device: str | torch.device = "cpu") -> LoadedMethod:
    """Load the spec's models through the pack's loaders onto ``device`` (once per worker)."""
    spec = check_spec(spec)
    device = torch.device(device)
    if spec.method in FUSEDREAM_FAMILY:
        return _fusedream_family(spec, device)
    if spec.method == "clipag-pixels":
        return _clipag_pixels(spec, device)
    return _kandinsky(spec, device)


def _fusedream_family(spec: MethodSpec, device: torch.device) -> LoadedMethod:
    from ..fusedream.augment import AugmentPolicy
    from ..fusedream.pipeline import FuseDreamSettings, generate
    from ..models.biggan import load_biggan
    from ..models.clip import load_clip

    generator = load_biggan(spec.models["biggan"])
    scorer = load_clip(spec.models.get("arch", "auto"), spec.models["clip"])
    generator.model.to(device)
    scorer.model.to(device)
    policy = AugmentPolicy()
    fixed = {}
    if spec.method in ("augclip", "naive"):
        fixed.update(SINGLE_START)
    if spec.method == "naive":
        policy = AugmentPolicy(color=False, translation=False, resize=False, cutout=False)
        fixed.update(copies=1, latent_noise=0.0)
    base = _fill(FuseDreamSettings, spec.settings, fixed)
    score_name = "clip" if spec.method == "naive" else "augclip"

    def make(prompt: str, seed: int):
        result = generate(generator, scorer, prompt, dataclasses.replace(base, seed=seed), policy)
        return result.image, {score_name: result.best_score, "best_step": result.best_step}

    settings = dataclasses.asdict(base)
    settings.pop("seed")
    if spec.method == "naive":
        settings["augment"] = False
    return LoadedMethod(spec, device, make, settings)


def _clipag_pixels(spec: MethodSpec, device: torch.device) -> LoadedMethod:
    from ..clipag.init_images import noise_images
    from ..clipag.synthesis import PixelSynthesisSettings, synthesize_pixels
    from ..fusedream.augment import AugmentPolicy
    from ..fusedream.objective import AugClipObjective, parse_prompts
    from ..models.clip import load_clip

    scorer = load_clip(spec.models.get("arch", "auto"), spec.models["clip"])
    scorer.model.to(device)
    base = _fill(PixelSynthesisSettings, spec.settings)
    size = int(spec.settings.get("size") or scorer.image_size[0])

    def make(prompt: str, seed: int):
        objective = AugClipObjective(scorer, parse_prompts(prompt), AugmentPolicy(signed_range=False))
        init = noise_images(1, size, torch.Generator().manual_seed(seed))
        result = synthesize_pixels(objective, init, dataclasses.replace(base, seed=seed))
        return result.image, {"clip": float(result.best_score[0]), "best_step": int(result.best_step[0])}

    settings = dataclasses.asdict(base)
    settings.pop("seed")
    settings["size"] = size
    return LoadedMethod(spec, device, make, settings)


def _kandinsky(spec: MethodSpec, device: torch.device) -> LoadedMethod:
    from ..core.precision import resolve_dtype
    from ..models.kandinsky import load_decoder, load_encoders
    from ..ovi.baselines import text_as_image_embeds
    from ..ovi.decode import decode_image_embeds
    from ..ovi.optimize import optimize_ovi

    s = _fill(KandinskySettings, spec.settings)
    encoders = load_encoders(spec.models["prior"], resolve_dtype("auto", device, "kandinsky_encoder"))
    decoder = load_decoder(spec.models["decoder"], resolve_dtype("auto", device, "vae"))
    for module in (encoders.image_encoder, encoders.text_encoder, decoder.unet, decoder.movq):
        module.to(device)
    negative = encoders.zero_image_embed()

    def make(prompt: str, seed: int):
        text = encoders.encode_text([prompt])
        scores = {}
        if spec.method == "ovi":
            result = optimize_ovi(encoders.image_encoder, text.text_embeds, s.num_tokens, s.steps, s.lr, seed)
            embeds = result.image_embeds
            scores = {"cosine": result.best_cosine, "best_step": result.best_step}
        else:
            embeds = text_as_image_embeds(text)
        image = decode_image_embeds(decoder, embeds, negative, s.decoder_steps, s.guidance, s.width, s.height, seed)
        return image, scores

    settings = dataclasses.asdict(s)
    if spec.method == "textemb":
        for name in OVI_ONLY:
            settings.pop(name)
    return LoadedMethod(spec, device, make, settings)

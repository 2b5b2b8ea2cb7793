"""Feature networks for IS and FID: torchmetrics' Inception v3 from a local weights file, or the toy world's judge.

Both map uint8 images ``[N,3,H,W]`` to ``pool`` features (FID) and class ``logits`` (IS):

- ``inception``: torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's port of the TF Inception used by the FID
  and IS papers) built from ``weights-inception-2015-12-05-6726825d.pth``, never downloaded here. It takes any
  size and resizes to 299² itself, as in torchmetrics' own FID/IS (``input_size`` None). ``pool`` = the 2048-d
  pool features (torchmetrics' FID ``feature=2048``), ``logits`` = pool @ fcᵀ without the bias, i.e.
  torchmetrics' IS ``feature='logits_unbiased'``.
- ``toyworld``: the toy world's judge CNN, a stand-in for Inception on 32×32 toy scenes (its input size; NOT
  comparable with Inception numbers). ``pool`` = its 128-d hidden layer; ``logits`` = for each of the 144 single-object scenes
  (class c in cell j; index j · 16 + c) the log-odds log p_j(c) − log p_j(empty); up to a constant per image
  (which IS's softmax ignores) this is the log-likelihood of "only c in j, every other cell empty", so IS counts
  distinct (shape, colour, cell) contents as Inception counts ImageNet classes.
"""
from __future__ import annotations

import os

import torch

from ..core.errors import FuseDreamError, require
from .metrics import require_torchmetrics

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
NETWORKS = ("inception", "toyworld")


class InceptionNetwork:
    name = "inception"

    def __init__(self, weights: str):
        require(os.path.isfile(weights),
                f"Inception weights '{weights}' do not exist. FID/IS need torch-fidelity's {INCEPTION_FILE} "
                f"(from {INCEPTION_URL}); download it once and pass its path (nothing is downloaded at run time).")
        require_torchmetrics()
        try:
            import torch_fidelity  # noqa: F401 — torchmetrics needs it only when the network is built
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError:
            raise FuseDreamError("IS/FID with Inception need torchmetrics and torch-fidelity: "
                                 "pip install 'fusedream-nodes[eval]'.") from None
        from ..core.checkpoints import read_state_dict

        read_state_dict(weights)  # a safe (weights_only) read first: torch-fidelity's own loader unpickles
        try:
            self.model = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                            feature_extractor_weights_path=weights)
        except RuntimeError as exc:
            raise FuseDreamError(f"'{weights}' is not torch-fidelity's Inception v3 ({INCEPTION_FILE}): "
                                 f"{str(exc)[:300]}") from None
        self.input_size = None
        self.model.requires_grad_(False)

    def to(self, device) -> "InceptionNetwork":
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        pool = self.model(images.to(device=device, dtype=torch.uint8)).float()
        return {"pool": pool, "logits": pool @ self.model.fc.weight.float().t()}


class ToyWorldNetwork:
    name = "toyworld"

    def __init__(self, judge_path: str):
        require(os.path.isfile(judge_path), f"toy-world judge '{judge_path}' does not exist (it is "
                                            f"tests/fixtures/toyworld/toyworld/judge.safetensors).")
        from ..toyworld.build import load_judge
        from ..toyworld.world import IMAGE_SIZE

        self.judge = load_judge(judge_path).float()
        self.input_size = IMAGE_SIZE

    def to(self, device) -> "ToyWorldNetwork":
        self.judge.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.to(next(self.judge.parameters()).device).float() / 255 * 2 - 1
        hidden = self.judge.head[:3](self.judge.features(x))
        log_p = self.judge.head[3:](hidden).view(x.shape[0], 9, -1).log_softmax(-1)
        log_odds = log_p[..., 1:] - log_p[..., :1]
        return {"pool": hidden.float(), "logits": log_odds.flatten(1).float()}


def load_feature_network(kind: str, path: str):
    require(kind in NETWORKS, f"feature network must be one of {', '.join(NETWORKS)}, got '{kind}'.")
    return InceptionNetwork(path) if kind == "inception" else ToyWorldNetwork(path)

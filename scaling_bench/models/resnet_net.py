"""torchvision's ResNet with the stem and stage widths taken from the config, apart from
``models.resnet`` so that sizing a ResNet, and a cached plan of one, import no torchvision
(1.5 s: its ops import ``torch._dynamo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

if TYPE_CHECKING:
    from scaling_bench.models.resnet import ResNetConfig

_TORCHVISION_WIDTHS = (64, 128, 256, 512)


class WidthScaledResNet(ResNet):
    """torchvision's ResNet with the stem and stage widths taken from the config."""

    def __init__(self, cfg: ResNetConfig) -> None:
        self.widths = cfg.widths  # read by _make_layer during ResNet.__init__
        super().__init__(BasicBlock, list(cfg.layers), num_classes=cfg.n_classes)
        self.conv1 = nn.Conv2d(3, cfg.widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = self._norm_layer(cfg.widths[0])  # BatchNorm's own init is torchvision's (1, 0)
        self.fc = nn.Linear(cfg.widths[3], cfg.n_classes)  # torchvision keeps Linear's own init

    def _make_layer(
        self,
        block: type[BasicBlock],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        stage = _TORCHVISION_WIDTHS.index(planes)
        if stage == 0:
            self.inplanes = self.widths[0]
        return super()._make_layer(block, self.widths[stage], blocks, stride, dilate)

"""The YOLOv4 network: backbone (timm, or CSPDarknet53-tiny) -> neck (SPP + PAN or FPN, or yolov4-tiny's FPN) -> head.

The network never sees targets or losses, so it exports on its own (effdet's separation).
"""

from __future__ import annotations

import torch
from torch import nn

from .anchors import AnchorSet, anchors_tensor
from .backbone import Backbone
from .config import ModelCfg
from .head import YOLOHead
from .layers import fuse_conv_bn_
from .neck import PANNeck
from .tiny import TinyFPNNeck

__all__ = ["YOLOv4"]


class YOLOv4(nn.Module):
    """YOLOv4 detector network.

    Args:
        cfg: the architecture (see :class:`ModelCfg`; variants in ``MODEL_CFGS``).
        num_classes: number of object classes ``C``.

    ``forward(images: [B, 3, H, W] float, H and W multiples of 32) -> list[Tensor[B, A*(5+C), H/s, W/s]]``
    for ``s`` in ``cfg.strides`` ((8, 16, 32); yolov4-tiny: (16, 32)): the raw head maps, same type in train and eval.
    """

    def __init__(self, cfg: ModelCfg, num_classes: int) -> None:
        super().__init__()
        self._cfg = cfg
        self.anchors = AnchorSet(cfg.anchors, cfg.strides, cfg.scale_x_y)
        self.backbone = Backbone(
            cfg.backbone,
            strides=cfg.strides,
            act=cfg.backbone_act,
            width=cfg.backbone_width,
            depth=cfg.backbone_depth,
            pretrained=cfg.pretrained_backbone,
            bn_eps=cfg.bn_eps,
        )
        self.neck: PANNeck | TinyFPNNeck
        if cfg.neck in ("pan", "fpn"):
            self.neck = PANNeck(
                self.backbone.out_channels,
                width=cfg.neck_width,
                act=cfg.neck_act,
                spp_kernels=cfg.spp_kernels,
                sam=cfg.sam,
                dropblock=cfg.dropblock,
                dropblock_size=cfg.dropblock_size,
                bn_eps=cfg.bn_eps,
                attention=cfg.neck_attention,
                fpn=cfg.neck == "fpn",
            )
        elif cfg.neck == "tiny_fpn":
            unsupported = {
                "spp_kernels": cfg.spp_kernels,
                "sam": cfg.sam,
                "dropblock": cfg.dropblock,
                "neck_attention": cfg.neck_attention != "none" and cfg.neck_attention,
            }
            bad = {k: v for k, v in unsupported.items() if v}
            if bad or cfg.neck_width != 1.0:
                raise ValueError(
                    f"neck 'tiny_fpn' (yolov4-tiny) has no SPP, SAM, DropBlock, neck_attention or neck_width; got {bad}"
                )
            self.neck = TinyFPNNeck(self.backbone.out_channels, act=cfg.neck_act, bn_eps=cfg.bn_eps)
        else:
            raise ValueError(f"neck must be 'pan', 'fpn' or 'tiny_fpn', got {cfg.neck!r}")
        self.head = YOLOHead(
            self.neck.out_channels,
            num_classes,
            anchors_per_level=self.anchors.anchors_per_level,
            act=cfg.neck_act,
            prior_prob=cfg.prior_prob,
            cls_prior_prob=cfg.cls_prior_prob,
            stem_channels=getattr(self.neck, "head_channels", None),
            bn_eps=cfg.bn_eps,
        )
        self.max_stride = int(max(cfg.strides))

    @property
    def cfg(self) -> ModelCfg:
        """The architecture, with the anchors the network holds now.

        The anchor buffer (``anchors.anchors``) is the one home of the anchors: a loaded checkpoint, darknet
        weights, :class:`~lightning_yolo.callbacks.AutoAnchor` or ``set_anchors`` change it in place, and this
        config (written into checkpoints as ``model_cfg``) reads it rather than keeping a copy in step.
        """
        held = self.anchors.anchors
        if torch.equal(held.detach().cpu(), anchors_tensor(self._cfg.anchors)):
            return self._cfg
        return self._cfg.replace(
            anchors=tuple(tuple((round(w, 4), round(h, 4)) for w, h in level) for level in held.tolist())
        )

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def strides(self) -> list[int]:
        return list(self.cfg.strides)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        torch._assert(images.dim() == 4, "images must be [B, 3, H, W]")
        torch._assert(
            images.shape[-1] % self.max_stride == 0 and images.shape[-2] % self.max_stride == 0,
            f"image height and width must be multiples of the largest stride ({self.max_stride})",
        )
        return self.head(self.neck(self.backbone(images)))

    def reset_head(self, num_classes: int) -> None:
        """Replace the prediction layers for a new class count (fine-tuning to a new class list)."""
        self.head.reset(num_classes)

    @torch.no_grad()
    def fuse(self) -> YOLOv4:
        """Fold Conv+BN pairs for inference (puts the model in eval mode). Returns ``self``."""
        self.eval()
        fuse_conv_bn_(self)
        return self

"""Candidates are capped before NMS; greedy NMS is torchvision's batched NMS on shifted boxes (issue 10, item 10)."""

from __future__ import annotations

import importlib

import pytest
import torch
from torchvision import ops as tv_ops

from lightning_yolo import InferenceCfg, YOLOModule
from lightning_yolo.ops.nms import batched_nms

# the module, not the function of the same name that lightning_yolo.ops exports
postprocess_module = importlib.import_module("lightning_yolo.ops.postprocess")


def _per_group_reference(boxes, scores, idxs, thresh):
    kept = [g_idx[tv_ops.nms(boxes[g_idx], scores[g_idx], thresh)] for g_idx in
            (torch.nonzero(idxs == g).squeeze(1) for g in idxs.unique())]  # fmt: skip
    kept = torch.cat(kept)
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]


@pytest.mark.parametrize("n", [300, 6000])  # torchvision's coordinate trick below 4000 boxes on CPU, a loop above
def test_batched_nms_equals_per_group_nms_with_negative_coordinates(n):
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * 200 - 150  # mostly negative: the case torchvision's trick gets wrong
    boxes = torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 60 + 1), 1)
    scores = (torch.randperm(n, generator=g).float() + 1) / n
    idxs = torch.randint(0, 7, (n,), generator=g)
    torch.testing.assert_close(batched_nms(boxes, scores, idxs, 0.5), _per_group_reference(boxes, scores, idxs, 0.5))


@pytest.mark.parametrize("nms_kind", ["greedy", "diou"])
def test_predictor_caps_candidates_entering_nms(monkeypatch, nms_kind):
    """An untrained 1-class model passes score_thresh=0.001 with all 6,300 boxes per image at 320 px: at most
    max_nms per image (the best by score) enter NMS."""
    torch.manual_seed(0)
    module = YOLOModule(model_name="yolov4_pico", num_classes=1, inference=InferenceCfg(nms_kind=nms_kind)).eval()
    sizes = []
    name = "diou_nms" if nms_kind == "diou" else "batched_nms"
    real = getattr(postprocess_module, name)

    def spy(boxes, scores, idxs, *args, **kw):
        sizes.append((int(boxes.shape[0]), float(scores.min())))
        return real(boxes, scores, idxs, *args, **kw)

    monkeypatch.setattr(postprocess_module, name, spy)
    with torch.no_grad():
        raw = module.model(torch.rand(2, 3, 320, 320))
        decoded = module.predictor(score_thresh=0.001).decode_raw(raw)
        scores = (decoded[..., 4:5] * decoded[..., 5:]).amax(-1)
        assert int((scores > 0.001).sum()) == 2 * 6300  # every box is a candidate at initialisation
        dets = module.predictor(score_thresh=0.001, max_det=100, max_nms=500).detect_raw(raw)
    assert sizes[-1][0] == 2 * 500
    # the cap keeps the best: every box that entered scores at least the 500th best of its image
    assert sizes[-1][1] >= float(scores.topk(500, dim=1).values[:, -1].min()) - 1e-7
    assert [len(d["boxes"]) for d in dets] == [100, 100]
    assert module.predictor().max_nms == 3000  # the default cap
    with pytest.raises(ValueError, match="max_nms"):
        module.predictor(max_nms=0)

"""darknet .cfg / .weights: parity with an independent darknet-style forward, round trips, errors, yolov4-tiny.

The cfg texts are written here from darknet's published layer lists (yolov4.cfg, yolov4-tiny.cfg); the weights
files are written by this file's own writer and checked against this file's own float64 darknet forward (conv,
BatchNorm with eps 1e-5, activations, route with groups, shortcut, maxpool, upsample, sam), not the package's
exporter or mapping.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_yolo.models import create_model
from lightning_yolo.models.darknet import (
    DarknetError,
    darknet_layout,
    init_from_darknet,
    load_darknet,
    parse_cfg,
    read_weights,
    save_darknet,
    write_weights,
)

# ---------------------------------------------------------------------------------------------------- cfg texts


def _conv(filters, size, stride=1, act="leaky", bn=True):
    lines = ["[convolutional]"] + (["batch_normalize=1"] if bn else [])
    return lines + [f"filters={filters}", f"size={size}", f"stride={stride}", "pad=1", f"activation={act}", ""]


def _yolo(mask, anchors, classes, scale):
    return [
        "[yolo]", f"mask = {mask}", f"anchors = {anchors}", f"classes={classes}", f"num={len(anchors.split(',')) // 2}",
        "jitter=.3", "ignore_thresh = .7", "truth_thresh = 1", f"scale_x_y = {scale}", "iou_thresh=0.213",
        "iou_normalizer=0.07", "iou_loss=ciou", "nms_kind=greedynms", "beta_nms=0.6", "",
    ]  # fmt: skip


YOLOV4_ANCHORS = "12, 16, 19, 36, 40, 28, 36, 75, 76, 55, 72, 146, 142, 110, 192, 243, 459, 401"


def yolov4_cfg(classes: int = 80, sam: bool = False, size: int = 64) -> str:
    """darknet cfg/yolov4.cfg's layer list (optionally with a [sam] before each head, as the yolov4-sam cfgs)."""
    out = ["[net]", "batch=64", f"width={size}", f"height={size}", "channels=3", "momentum=0.949", ""]
    out += _conv(32, 3, act="mish")
    # CSPDarknet53 stages: (filters, blocks); stage 1 has 64-wide halves and 32-wide block bottlenecks
    for filters, blocks in ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)):
        half = filters if filters == 64 else filters // 2
        out += _conv(filters, 3, 2, "mish")
        out += _conv(half, 1, act="mish")
        out += ["[route]", "layers = -2", ""]
        out += _conv(half, 1, act="mish")
        for _ in range(blocks):
            out += _conv(32 if filters == 64 else half, 1, act="mish")
            out += _conv(half, 3, act="mish")
            out += ["[shortcut]", "from=-3", "activation=linear", ""]
        out += _conv(half, 1, act="mish")
        out += ["[route]", f"layers = -1,-{3 * blocks + 4}", ""]
        out += _conv(filters, 1, act="mish")
    out += _conv(512, 1) + _conv(1024, 3) + _conv(512, 1)
    out += ["[maxpool]", "stride=1", "size=5", "", "[route]", "layers=-2", "", "[maxpool]", "stride=1", "size=9", ""]
    out += ["[route]", "layers=-4", "", "[maxpool]", "stride=1", "size=13", "", "[route]", "layers=-1,-3,-5,-6", ""]
    out += _conv(512, 1) + _conv(1024, 3) + _conv(512, 1)
    out += _conv(256, 1) + ["[upsample]", "stride=2", "", "[route]", "layers = 85", ""] + _conv(256, 1)
    out += ["[route]", "layers = -1, -3", ""] + _conv(256, 1) + _conv(512, 3) + _conv(256, 1) + _conv(512, 3)
    out += _conv(256, 1)
    out += _conv(128, 1) + ["[upsample]", "stride=2", "", "[route]", "layers = 54", ""] + _conv(128, 1)
    out += ["[route]", "layers = -1, -3", ""] + _conv(128, 1) + _conv(256, 3) + _conv(128, 1) + _conv(256, 3)
    out += _conv(128, 1)
    filters = 3 * (5 + classes)
    extra = 2 if sam else 0
    for level, (width, scale) in enumerate(((128, 1.2), (256, 1.1), (512, 1.05))):
        if level:
            # route back to the last 1x1 before the previous head (4 layers back, 6 with sam), downsample, concat
            # with the top-down map of this level (16 / 37 layers back in yolov4.cfg, plus sam layers)
            out += ["[route]", f"layers = -{4 + extra}", ""] + _conv(width, 3, 2)
            back = (16 if level == 1 else 37) + (extra if level == 1 else 2 * extra)
            out += ["[route]", f"layers = -1, -{back}", ""]
            out += _conv(width, 1) + _conv(2 * width, 3) + _conv(width, 1) + _conv(2 * width, 3) + _conv(width, 1)
        if sam:
            out += _conv(width, 1, act="logistic") + ["[sam]", "from=-2", ""]
        out += _conv(2 * width, 3) + _conv(filters, 1, act="linear", bn=False)
        out += _yolo(f"{3 * level},{3 * level + 1},{3 * level + 2}", YOLOV4_ANCHORS, classes, scale)
    return "\n".join(out)


def yolov4_tiny_cfg(classes: int = 80, size: int = 64) -> str:
    """darknet cfg/yolov4-tiny.cfg's layer list."""
    anchors = "10,14,  23,27,  37,58,  81,82,  135,169,  344,319"
    out = ["[net]", f"width={size}", f"height={size}", "channels=3", ""]
    out += _conv(32, 3, 2) + _conv(64, 3, 2)
    for filters in (64, 128, 256):
        out += _conv(filters, 3) + ["[route]", "layers=-1", "groups=2", "group_id=1", ""]
        out += _conv(filters // 2, 3) + _conv(filters // 2, 3) + ["[route]", "layers = -1,-2", ""]
        out += _conv(filters, 1) + ["[route]", "layers = -6,-1", "", "[maxpool]", "size=2", "stride=2", ""]
    out += _conv(512, 3) + _conv(256, 1) + _conv(512, 3) + _conv(3 * (5 + classes), 1, act="linear", bn=False)
    out += _yolo("3,4,5", anchors, classes, 1.05)
    out += ["[route]", "layers = -4", ""] + _conv(128, 1)
    out += ["[upsample]", "stride=2", "", "[route]", "layers = -1, 23", ""]
    out += _conv(256, 3) + _conv(3 * (5 + classes), 1, act="linear", bn=False)
    out += _yolo("1,2,3", anchors, classes, 1.05)
    return "\n".join(out)


# ------------------------------------------------------------------------- independent darknet reader and forward


def _sections(text: str) -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            out.append((line[1:-1], {}))
        else:
            k, v = line.split("=", 1)
            out[-1][1][k] = v
    return out[1:] if out[0][0] == "net" else out


def _act(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "leaky":
        return torch.where(x > 0, x, 0.1 * x)
    if name == "mish":
        return x * torch.tanh(F.softplus(x))
    if name == "logistic":
        return torch.sigmoid(x)
    assert name == "linear", name
    return x


def darknet_forward(text: str, image: torch.Tensor, seed: int = 0) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """Run the cfg in float64 with random weights, drawn layer by layer; BatchNorm statistics are set to the
    statistics of the conv output on ``image`` (a 'calibrated' random network: activations stay O(1) through 160
    layers) and then perturbed. Returns the inputs of the [yolo] layers and the weights in darknet file order."""
    rng = np.random.default_rng(seed)
    outputs: list[torch.Tensor] = []
    yolo_inputs: list[torch.Tensor] = []
    payload: list[np.ndarray] = []
    x = image.double()
    for i, (kind, opt) in enumerate(_sections(text)):
        def ref(v: str) -> int:
            v = int(v)
            return v if v >= 0 else i + v

        if kind == "convolutional":
            n, k, s = int(opt["filters"]), int(opt["size"]), int(opt["stride"])
            c = x.shape[1]
            w = rng.normal(0.0, 1.0 / np.sqrt(c * k * k), size=(n, c, k, k)).astype(np.float32)
            y = F.conv2d(x, torch.from_numpy(w).double(), stride=s, padding=k // 2)
            if opt.get("batch_normalize") == "1":
                # per-channel statistics, variance floored at half the layer's mean variance: statistics of the
                # 2x2 maps at stride 32 (64 px input) would otherwise amplify float32 rounding without bound
                mean = y.mean(dim=(0, 2, 3)).numpy() + rng.normal(0, 0.05, n)
                var = y.var(dim=(0, 2, 3)).numpy()
                var = var * rng.uniform(0.8, 1.25, n) + 0.5 * var.mean() + 1e-3
                scale, bias = rng.uniform(0.5, 1.5, n), rng.normal(0.0, 0.2, n)
                mean, var, scale, bias = (a.astype(np.float32) for a in (mean, var, scale, bias))
                payload += [bias, scale, mean, var]
                t = lambda a: torch.from_numpy(a).double().view(1, -1, 1, 1)  # noqa: E731
                y = (y - t(mean)) / torch.sqrt(t(var) + 1e-5) * t(scale) + t(bias)
            else:
                bias = rng.normal(0.0, 0.5, n).astype(np.float32)
                payload.append(bias)
                y = y + torch.from_numpy(bias).double().view(1, -1, 1, 1)
            payload.append(w)
            x = _act(y, opt["activation"])
        elif kind == "route":
            parts = [outputs[ref(v)] for v in opt["layers"].split(",")]
            groups, gid = int(opt.get("groups", 1)), int(opt.get("group_id", 0))
            parts = [p.chunk(groups, dim=1)[gid] for p in parts]
            x = torch.cat(parts, dim=1)
        elif kind == "shortcut":
            x = x + outputs[ref(opt["from"])]
        elif kind == "sam":
            x = x * outputs[ref(opt["from"])]
        elif kind == "maxpool":
            k, s = int(opt["size"]), int(opt["stride"])
            x = F.max_pool2d(x, k, s, padding=(k - 1) // 2)
        elif kind == "upsample":
            x = x.repeat_interleave(int(opt["stride"]), 2).repeat_interleave(int(opt["stride"]), 3)
        elif kind == "yolo":
            yolo_inputs.append(x)
        else:  # pragma: no cover
            raise AssertionError(kind)
        outputs.append(x)
    return yolo_inputs, payload


def write_darknet_weights(path, payload: list[np.ndarray], major=0, minor=2, revision=5, seen=123456) -> None:
    """darknet's save_weights: int32 major, minor, revision; seen (uint64 if major*10+minor >= 2); float32 data."""
    with open(path, "wb") as f:
        np.array([major, minor, revision], "<i4").tofile(f)
        np.array([seen], "<u8" if major * 10 + minor >= 2 else "<u4").tofile(f)
        for a in payload:
            a.astype("<f4").tofile(f)


def _check_parity(tmp_path, text: str, size: int, expected_name: str, classes: int, float32_tol: float):
    """Load the cfg + independently written weights; the package network in float64 must equal the float64
    reference to < 1e-4 (the mapping is exact: ~1e-10 is measured); in float32 to ``float32_tol``."""
    cfg = tmp_path / "net.cfg"
    cfg.write_text(text)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    reference, payload = darknet_forward(text, image)
    write_darknet_weights(tmp_path / "net.weights", payload)
    imp = load_darknet(cfg, tmp_path / "net.weights")
    assert imp.model_name == expected_name and imp.num_classes == classes
    assert imp.header == {"version": [0, 2, 5], "seen": 123456}
    reference = sorted(reference, key=lambda t: -t.shape[-1])  # package order: finest level first
    scale = max(float(e.abs().max()) for e in reference)
    assert scale > 1.0  # the heads carry signal, the comparison is not between near-zero maps
    with torch.no_grad():
        raw32 = imp.model(image)
        raw64 = imp.model.double()(image.double())
    imp.model.float()
    assert [r.shape for r in raw64] == [r.shape for r in reference]
    diffs64 = [float((r - e).abs().max()) for r, e in zip(raw64, reference)]
    diffs32 = [float((r.double() - e).abs().max()) for r, e in zip(raw32, reference)]
    assert max(diffs64) < 1e-4, diffs64
    assert max(diffs32) < float32_tol, (diffs32, scale)
    return imp, payload, diffs64


# -------------------------------------------------------------------------------------------------------- tests


def test_yolov4_weights_parity_and_round_trip(tmp_path):
    """The full paper model at 64 px: darknet-style float64 forward == package forward; files round-trip."""
    # float32: rounding (1e-7) amplified through 162 random layers at 64 px reaches ~1e-2 (measured 0.07 max on
    # outputs of magnitude 3.5); float64 shows the mapping itself is exact
    imp, payload, diffs = _check_parity(tmp_path, yolov4_cfg(classes=80), 64, "yolov4_cspdarknet53", 80, 0.2)
    model = imp.model
    assert sum(p.numel() for p in model.parameters()) == 64_363_101
    assert imp.model_overrides == {"bn_eps": 1e-5}  # anchors, scale_x_y, SPP: yolov4.cfg's are the defaults
    assert imp.module_hparams == {
        "loss": {"box_loss": "ciou", "iou_thresh": 0.213, "ignore_thresh": 0.7},
        "inference": {"nms_kind": "greedy"},
    }
    # package -> darknet: the same bytes as the file written above (weights), and a cfg that loads back bit-exact
    save_darknet(model, tmp_path / "out.cfg", tmp_path / "out.weights", img_size=64, seen=123456)
    assert (tmp_path / "out.weights").read_bytes() == (tmp_path / "net.weights").read_bytes()
    back = load_darknet(tmp_path / "out.cfg", tmp_path / "out.weights")
    for key, value in model.state_dict().items():
        assert torch.equal(back.model.state_dict()[key], value), key
    # yolov4-tiny weights cannot initialise the paper model: the error names both layouts
    save_darknet(create_model("yolov4_tiny", num_classes=80), tmp_path / "tiny.cfg", tmp_path / "tiny.weights")
    with pytest.raises(DarknetError, match=r"tiny.cfg is a yolov4-tiny.cfg network \(yolov4_tiny\); .* yolov4.cfg"):
        init_from_darknet(model, tmp_path / "tiny.weights")


def test_yolov4_layer_mapping_is_explicit():
    layout = darknet_layout(create_model("yolov4_cspdarknet53", num_classes=80))
    mapping = layout.mapping()
    assert len(layout.layers) == 162 and len(mapping) == 110
    expected = {
        0: "backbone.body.stem_conv1",
        1: "backbone.body.stages_0.conv_down",
        2: "backbone.body.stages_0.conv_exp[0:64]",  # darknet's cross-stage part 1
        4: "backbone.body.stages_0.conv_exp[64:128]",  # darknet's block path
        5: "backbone.body.stages_0.blocks.0.conv1",
        8: "backbone.body.stages_0.conv_transition_b",
        10: "backbone.body.stages_0.conv_transition (input halves swapped)",
        12: "backbone.body.stages_1.conv_exp[0:64]",
        54: "backbone.body.stages_2.conv_transition (input halves swapped)",
        85: "backbone.body.stages_3.conv_transition (input halves swapped)",
        104: "backbone.body.stages_4.conv_transition (input halves swapped)",
        105: "neck.pre_spp.0",
        114: "neck.post_spp.0",
        116: "neck.post_spp.2",
        117: "neck.reduce5",
        120: "neck.lateral4",
        126: "neck.td4.4",
        130: "neck.lateral3",
        136: "neck.td3.4",
        137: "head.stems.0",
        138: "head.preds.0",
        141: "neck.down3",
        147: "neck.bu4.4",
        148: "head.stems.1",
        149: "head.preds.1",
        152: "neck.down4",
        158: "neck.bu5.4",
        159: "head.stems.2",
        160: "head.preds.2",
    }
    for index, key in expected.items():
        assert mapping[index] == key, (index, mapping[index], key)
    assert [s.type for s in layout.layers[108:114]] == ["maxpool", "route", "maxpool", "route", "maxpool", "route"]
    assert [layout.layers[i].type for i in (139, 150, 161)] == ["yolo"] * 3


def test_yolov4_tiny_parity_round_trip_and_mapping(tmp_path):
    imp, _, _ = _check_parity(tmp_path, yolov4_tiny_cfg(classes=3), 64, "yolov4_tiny", 3, 1e-4)
    # darknet's masks 1,2,3 / 3,4,5: (81, 82) on both levels, (10, 14) unused; those are the variant's defaults
    assert "anchors" not in imp.model_overrides
    assert imp.model.anchors.anchors.tolist() == [[[23, 27], [37, 58], [81, 82]], [[81, 82], [135, 169], [344, 319]]]
    mapping = imp.layout.mapping()
    assert {i: mapping[i] for i in (0, 2, 4, 7, 26, 27, 28, 29, 32, 35, 36)} == {
        0: "backbone.body.stem_conv1", 2: "backbone.body.stages.0.conv1", 4: "backbone.body.stages.0.conv2",
        7: "backbone.body.stages.0.conv4", 26: "backbone.body.conv_last", 27: "neck.reduce5",
        28: "head.stems.1", 29: "head.preds.1", 32: "neck.lateral5", 35: "head.stems.0", 36: "head.preds.0",
    }  # fmt: skip
    save_darknet(imp.model, tmp_path / "t.cfg", tmp_path / "t.weights", img_size=64, seen=123456)
    assert (tmp_path / "t.weights").read_bytes() == (tmp_path / "net.weights").read_bytes()
    back = load_darknet(tmp_path / "t.cfg", tmp_path / "t.weights")
    assert back.model_name == "yolov4_tiny"
    for key, value in imp.model.state_dict().items():
        assert torch.equal(back.model.state_dict()[key], value), key


@pytest.mark.slow
def test_yolov4_sam_parity(tmp_path):
    imp, _, _ = _check_parity(tmp_path, yolov4_cfg(classes=2, sam=True), 64, "yolov4_cspdarknet53", 2, 0.2)
    assert imp.model.cfg.sam


def test_package_model_round_trip_and_eps_folding(tmp_path):
    """A model trained here (BatchNorm eps 1e-3) exports so that darknet's eps-1e-5 forward gives its outputs."""
    torch.manual_seed(0)
    model = create_model("yolov4_tiny", num_classes=2, bn_eps=1e-3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.002, 0.05)  # small variances: where eps matters
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    save_darknet(model, tmp_path / "m.cfg", tmp_path / "m.weights", img_size=64)
    back = load_darknet(tmp_path / "m.cfg", tmp_path / "m.weights")
    assert back.model.cfg.bn_eps == 1e-5
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(model(x), back.model(x)):
            assert float((a - b).abs().max()) < 1e-4 * max(1.0, float(a.abs().max()))
    # with darknet's eps the round trip is bit-exact
    exact = create_model("yolov4_tiny", num_classes=2)
    save_darknet(exact, tmp_path / "e.cfg", tmp_path / "e.weights", img_size=64)
    again = load_darknet(tmp_path / "e.cfg", tmp_path / "e.weights").model
    assert all(torch.equal(again.state_dict()[k], v) for k, v in exact.state_dict().items())


def test_yolov4_tiny_parameters_and_flops():
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("yolov4_tiny", num_classes=80).eval()
    assert sum(p.numel() for p in model.parameters()) == 6_056_606  # darknet yolov4-tiny.cfg at 80 classes
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(torch.zeros(1, 3, 416, 416))
    assert abs(counter.get_total_flops() / 1e9 - 6.91) < 0.01  # darknet prints 6.910 BFLOPs at 416
    assert [o.shape[-1] for o in out] == [26, 13]


def test_weights_header_versions(tmp_path):
    data = [np.arange(5, dtype=np.float32)]
    write_darknet_weights(tmp_path / "old.weights", data, major=0, minor=1, revision=0, seen=77)
    w = read_weights(tmp_path / "old.weights")
    assert (w.version, w.seen, w.data.tolist()) == ((0, 1, 0), 77, [0, 1, 2, 3, 4])
    write_weights(tmp_path / "new.weights", data, seen=2**40)
    w = read_weights(tmp_path / "new.weights")
    assert (w.version, w.seen, w.data.tolist()) == ((0, 2, 5), 2**40, [0, 1, 2, 3, 4])
    assert (tmp_path / "new.weights").stat().st_size == 20 + 20
    (tmp_path / "bad.weights").write_bytes(b"\0" * 10)
    with pytest.raises(DarknetError, match="shorter than a darknet .weights header"):
        read_weights(tmp_path / "bad.weights")


def test_cfg_errors_name_file_line_and_key(tmp_path):
    with pytest.raises(DarknetError, match=r"x.cfg:3: expected key=value"):
        parse_cfg("x.cfg", "[net]\nwidth=64\nthis line is wrong\n")
    with pytest.raises(DarknetError, match=r"x.cfg:1: option .* before the first"):
        parse_cfg("x.cfg", "width=64\n[net]\n")
    with pytest.raises(DarknetError, match=r"x.cfg:3: \[net\] at line 1 sets 'width' twice"):
        parse_cfg("x.cfg", "[net]\nwidth=64\nwidth=32\n")
    text = yolov4_tiny_cfg()
    lines = text.splitlines()
    # a changed filter count: named with its line and both values
    i = lines.index("filters=128")
    bad = "\n".join(lines[:i] + ["filters=96"] + lines[i + 1 :])
    with pytest.raises(DarknetError, match=rf"t.cfg:{i + 1}: layer 10 \[convolutional\]: filters is 96, .* has 128"):
        load_darknet("t.cfg", cfg_text=bad)
    # an unsupported section
    j = lines.index("[maxpool]")
    bad = "\n".join(lines[:j] + ["[avgpool]", ""] + lines[j + 3 :])
    with pytest.raises(DarknetError, match=rf"t.cfg:{j + 1}: layer 9 \[avgpool\] is not supported"):
        load_darknet("t.cfg", cfg_text=bad)
    # an unsupported key, and a supported key with a value the package does not have
    bad = text.replace("filters=32\n", "filters=32\nantialiasing=1\n", 1)
    with pytest.raises(DarknetError, match=r"t.cfg:9: layer 0 \[convolutional\]: key 'antialiasing' is not supported"):
        load_darknet("t.cfg", cfg_text=bad)
    bad = text.replace("filters=32\n", "filters=32\ndilation=2\n", 1)
    with pytest.raises(DarknetError, match=r"t.cfg:9: layer 0 \[convolutional\]: dilation is 2, .* has 1"):
        load_darknet("t.cfg", cfg_text=bad)
    # scaled-YOLOv4 decoding
    with pytest.raises(DarknetError, match="new_coords=1"):
        load_darknet("t.cfg", cfg_text=text.replace("scale_x_y = 1.05", "scale_x_y = 1.05\nnew_coords=1", 1))
    # weights of another cfg: too short names the layer, too long is refused
    write_darknet_weights(tmp_path / "short.weights", [np.zeros(1000, np.float32)])
    with pytest.raises(DarknetError, match=r"short.weights: ends inside darknet layer 1 \(backbone.body.stem_conv2\)"):
        load_darknet("t.cfg", tmp_path / "short.weights", cfg_text=text)


def test_package_models_without_darknet_form_are_refused():
    with pytest.raises(DarknetError, match="no darknet form for backbone 'cs3darknet_s'"):
        darknet_layout(create_model("yolov4_pico", num_classes=2))


def test_exported_files_run_in_opencv_dnn(tmp_path):
    """OpenCV DNN's darknet importer (OpenCV 4.x; removed in 5) is an independent reader of the exported files."""
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromDarknet"):
        pytest.skip(f"OpenCV {cv2.__version__} has no darknet importer (see benchmarks/darknet_parity.py)")
    torch.manual_seed(0)
    model = create_model("yolov4_tiny", num_classes=3).eval()
    layout = save_darknet(model, tmp_path / "t.cfg", tmp_path / "t.weights", img_size=128)
    net = cv2.dnn.readNetFromDarknet(str(tmp_path / "t.cfg"), str(tmp_path / "t.weights"))
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    net.setInput(x.numpy())
    outs = net.forward([f"conv_{i - 1}" for i, s in enumerate(layout.layers) if s.type == "yolo"])
    with torch.no_grad():
        raw = model(x)
    for out, level in zip(outs, layout.yolo_levels):
        assert np.abs(out - raw[level].numpy()).max() < 1e-4

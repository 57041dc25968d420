"""Parity of the darknet export with OpenCV DNN, an independent implementation of darknet's cfg/weights format.

Builds each darknet-form variant with random weights (BatchNorm statistics, scales and biases drawn away from their
initial values), writes it with ``save_darknet``, runs the files through ``cv2.dnn.readNetFromDarknet`` and prints
the largest difference between OpenCV's outputs of the prediction convolutions (the layers before each ``[yolo]``)
and the package's raw head maps on the same input.

OpenCV 5 dropped the darknet importer; run the OpenCV half with a Python that has OpenCV 4.x::

    python3 -m venv /tmp/cv4 && /tmp/cv4/bin/pip install "opencv-python-headless<4.11"
    python benchmarks/darknet_parity.py --opencv-python /tmp/cv4/bin/python --img-size 416
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from lightning_yolo.models import create_model
from lightning_yolo.models.darknet import save_darknet

OPENCV_HALF = """
import json, sys, numpy as np, cv2
info = json.load(open(sys.argv[1]))
for name, d in info.items():
    z = np.load(d["npz"])
    net = cv2.dnn.readNetFromDarknet(d["cfg"], d["weights"])
    net.setInput(z["x"])
    outs = net.forward(["conv_%d" % i for i in d["convs"]])
    for o, level in zip(outs, d["levels"]):
        r = z["raw%d" % level]
        print("%s %dpx level %d %s: max |opencv - package| = %.2e (max |raw| %.2f), OpenCV %s" % (
            name, d["size"], level, tuple(r.shape), np.abs(o - r).max(), np.abs(r).max(), cv2.__version__))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opencv-python", default=sys.executable, help="a Python with OpenCV 4.x (darknet importer)")
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--models", nargs="+", default=["yolov4_tiny", "yolov4_cspdarknet53"])
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="darknet_parity_"))
    info = {}
    for name in args.models:
        model = create_model(name, num_classes=80)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.1)
        model.eval()
        cfg, weights = work / f"{name}.cfg", work / f"{name}.weights"
        layout = save_darknet(model, cfg, weights, img_size=args.img_size)
        x = torch.rand(1, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            raw = model(x)
        npz = work / f"{name}.npz"
        np.savez(npz, x=x.numpy(), **{f"raw{i}": r.numpy() for i, r in enumerate(raw)})
        convs = [i - 1 for i, s in enumerate(layout.layers) if s.type == "yolo"]
        info[name] = {"cfg": str(cfg), "weights": str(weights), "npz": str(npz), "convs": convs,
                      "levels": layout.yolo_levels, "size": args.img_size}  # fmt: skip
    (work / "info.json").write_text(json.dumps(info))
    subprocess.run([args.opencv_python, "-c", OPENCV_HALF, str(work / "info.json")], check=True)


if __name__ == "__main__":
    main()

"""darknet ``.cfg`` and ``.weights`` files: read them into this package's networks, and write them back.

The package has one module per job: :mod:`.cfg` (the cfg parser), :mod:`.weights_file` (``.weights`` I/O),
:mod:`.layout` (a network as darknet layers and weight slots), :mod:`.importer` (cfg + weights -> network) and
:mod:`.export` (network -> cfg + weights). Everything public is importable from here.

darknet (AlexeyAB) describes a network as a list of ``[section]`` layers in a ``.cfg`` text file and stores its
weights in a flat ``.weights`` file: a header (``major``, ``minor``, ``revision`` as int32, then the number of
training images seen, int64 when ``major * 10 + minor >= 2``, else int32), then for every ``[convolutional]``
layer in order its BatchNorm bias (beta), scale (gamma), running mean and running variance (or its conv bias when
``batch_normalize=0``), then its weights ``[filters, channels, size, size]``, all float32 little-endian.

Instead of building a generic graph from the cfg, this module maps the file onto this package's own networks, so
a model that came from darknet trains, validates, predicts and exports like any other:

* :func:`darknet_layout` writes down, for a :class:`~.yolo.YOLOv4`, the darknet layer list it computes
  (``yolov4.cfg`` for the PAN models on timm ``cspdarknet53``, ``yolov4-tiny.cfg`` for ``yolov4_tiny``) and, for
  every convolution, the ``state_dict`` key it fills (:class:`ConvSlot`: darknet layer index -> key prefix, with
  the channel slice or permutation timm's module layout needs);
* :func:`load_darknet` parses a cfg, picks the package model it describes, checks the cfg section by section
  against that model's layout (the first section that differs is named with its file line and why) and loads the
  weights through the slots;
* :func:`save_darknet` writes a model back as ``.cfg`` + ``.weights`` for darknet or OpenCV DNN.

Two details make the mapping exact rather than approximate:

* timm's CSPDarknet53 computes darknet's two 1x1 convolutions after each downsampling (the cross-stage "part 1"
  and the block path "part 2") as one ``conv_exp`` convolution whose output is split in two, and concatenates
  ``[part 1, blocks]`` where darknet's ``[route] layers=-1,-N`` concatenates ``[blocks, part 1]``: the slots carry
  the output-channel slice of ``conv_exp`` and the input-channel half swap of ``conv_transition``;
* darknet normalises with ``sqrt(var + 1e-5)``: networks loaded from darknet are built with ``bn_eps=1e-5``;
  a model trained here with another epsilon is written with its running variances shifted by the difference, so
  darknet computes the same function.

Supported sections: ``[net]`` (``width``, ``height``, ``channels=3``), ``[convolutional]``, ``[route]`` (with
``groups`` / ``group_id``), ``[shortcut]``, ``[maxpool]``, ``[upsample]``, ``[sam]`` and ``[yolo]``, in the
arrangements of yolov4.cfg (optionally with SAM or without SPP) and yolov4-tiny.cfg; :data:`UNSUPPORTED` lists what
is rejected and why.
"""

from __future__ import annotations

from .cfg import DarknetError, Section, format_cfg, parse_cfg
from .export import save_darknet
from .importer import (
    UNSUPPORTED,
    DarknetImport,
    check_structure,
    find_cfg,
    init_from_darknet,
    load_darknet,
    model_cfg_from_darknet,
)
from .layout import DARKNET_BN_EPS, ConvSlot, DarknetLayout, darknet_layout, layout_state_dict, state_dict_arrays
from .weights_file import WEIGHTS_VERSION, DarknetWeights, read_weights, write_weights

__all__ = [
    "DARKNET_BN_EPS",
    "WEIGHTS_VERSION",
    "ConvSlot",
    "DarknetError",
    "DarknetImport",
    "DarknetLayout",
    "DarknetWeights",
    "Section",
    "UNSUPPORTED",
    "check_structure",
    "darknet_layout",
    "find_cfg",
    "format_cfg",
    "init_from_darknet",
    "layout_state_dict",
    "load_darknet",
    "model_cfg_from_darknet",
    "parse_cfg",
    "read_weights",
    "save_darknet",
    "state_dict_arrays",
    "write_weights",
]

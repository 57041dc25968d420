"""The notebooks in notebooks/ are stored without outputs and run end to end in their FAST configuration."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
NAMES = ["01_quickstart.ipynb", "02_custom_data_finetune.ipynb", "03_inference_export.ipynb"]


def test_the_three_notebooks_exist_without_outputs():
    assert [p.name for p in NOTEBOOKS] == NAMES
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has stored outputs"
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "LIGHTNING_YOLO_NB_FAST" in params[0].source, path.name


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """The FAST configuration, one torch thread, caches in tmp_path, and a python3 kernel of this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setenv("LIGHTNING_YOLO_NB_FAST", "1")
    monkeypatch.setenv("LIGHTNING_YOLO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # busy 2-core machines: OpenMP spinning slows tiny steps ~300x
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    spec = KernelSpecManager().find_kernel_specs().get("python3")
    if spec is None or not Path(spec).is_dir():  # a fresh environment without a registered kernel spec
        kernels = tmp_path / "jupyter" / "kernels" / "python3"
        kernels.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (kernels / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter") + os.pathsep + os.environ.get("JUPYTER_PATH", ""))
    work = tmp_path / "cwd"
    work.mkdir()
    return work


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, kernel_env):
    path = next(p for p in NOTEBOOKS if p.name == name)
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        book, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(kernel_env)}}
    )
    client.execute()
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= {"01": 4, "02": 2, "03": 2}[name[:2]], f"{name}: {len(images)} pictures"
    written = {p.name for p in (kernel_env / "lightning_yolo_notebooks").iterdir()}
    assert written  # everything went to the working directory, nothing to the repository
    if name.startswith("03"):
        text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        assert "max |onnxruntime - pytorch| =" in text and {"model_nms.onnx", "model.torchscript"} <= written

"""The teaching notebooks under examples/notebooks/ execute from top to bottom (their cells
assert what the text claims), and they are committed without outputs."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "examples" / "notebooks").glob("*.ipynb"))
#: seconds one cell may take (generous: the first run in a fresh checkout compiles Numba kernels)
CELL_TIMEOUT = 240


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == ["01_quantization_noise.ipynb",
                                           "02_quantize_analyze_fix.ipynb",
                                           "03_test_oracle.ipynb",
                                           "04_quantization_aware_training.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: clear the outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()        # raises CellExecutionError (with the cell and traceback) on failure
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors

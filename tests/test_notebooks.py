"""The notebooks in notebooks/: stripped in git, and executed top to bottom without a cell error.

Each notebook runs on a kernel of this interpreter (nbclient with the ``python3`` kernel; an
injected first cell checks that the kernel's ``sys.executable`` is the one running pytest, so the
notebooks see this checkout's snn_deploy and its pinned dependencies). The working directory is
notebooks/, as in Jupyter; the notebooks write only into temporary folders. Each one should take
well under 3 minutes on CPU (they print their own run time in their last cell).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 600  # per cell; a whole notebook is meant to take well under 3 minutes


def test_there_are_notebooks():
    names = [p.stem[:2] for p in PATHS]
    assert names[:4] == ["01", "02", "03", "04"], names


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_is_stripped(path):
    """No outputs or execution counts in git: ``nbconvert --clear-output`` or ``nbstripout``."""
    book = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(book["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts"
    assert book["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in book["metadata"], f"{path.name}: widget state in the metadata"


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path):
    nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]'")
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]'")
    book = nbformat.read(path, as_version=4)
    check = nbformat.v4.new_code_cell(
        f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable")
    book.cells.insert(0, check)
    client = nbclient.NotebookClient(book, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:  # names the cell and the traceback
        pytest.fail(f"{path.name}: {exc}", pytrace=False)
    seconds = time.perf_counter() - started
    print(f"{path.name}: {seconds:.0f} s")
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors

"""Execute notebooks and keep stored outputs only where nbval compares them (``# NBVAL_CHECK_OUTPUT`` cells).

    python tests/notebooks/store_outputs.py notebooks/01_receptive_fields.ipynb [...]

Run it after editing a checked cell; nbval (``make test``) then fails if a later change alters those outputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK = "# NBVAL_CHECK_OUTPUT"


def store_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if CHECK in cell.source:  # nbval compares only cells that ran (execution_count set)
            cell.outputs = [o for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout"]
            for output in cell.outputs:
                output.pop("execution_count", None)
        else:
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    print(f"stored checked outputs of {path}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        store_outputs(Path(arg))

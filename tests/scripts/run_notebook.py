"""Run a notebook, as JupyterLab's kernels run it, on the launcher's cluster.

The kernel is a fresh process that inherits this one's environment, in which
the launcher put the scheduler's address and the job's credentials: a plain
Client() there is this cluster.  Prints the cells' text output; an error cell
raises, which makes this script's exit status 1.
"""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

path = Path(sys.argv[1]).resolve()
notebook = nbformat.read(path, as_version=4)
NotebookClient(
    notebook, kernel_name="python3", timeout=600,
    resources={"metadata": {"path": str(path.parent)}},
).execute()
for cell in notebook.cells:
    for output in cell.get("outputs", []):
        if output.get("name") == "stdout":
            print(output["text"], end="")

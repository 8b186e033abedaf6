"""The README's node table is `graph-runtime nodes --markdown`: it lists every registered node, and nothing
else, so a new node cannot land undocumented."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- nodes:start -->", "<!-- nodes:end -->"


def test_readme_node_table_is_the_registry():
    table = subprocess.run([sys.executable, "-m", "graph_runtime", "nodes", "--markdown"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert START in readme and END in readme, "README.md has no node table markers"
    shown = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert shown == table, "README's node table is stale: paste the output of `graph-runtime nodes --markdown`"

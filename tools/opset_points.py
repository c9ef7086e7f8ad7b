"""Rewrite ``tests/data/opset_points.json``: the opsets each rule is tested at beyond its table.

Run from the repository root: ``PYTHONPATH=$PWD python tools/opset_points.py``. See
``tests/opsetcases.py`` for how the points are chosen; ``tests/test_opsets.py`` runs them.
"""

from __future__ import annotations

import json
import os
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "tests"))

import opsetcases  # noqa: E402  (the tests folder is on the path only now)


def render() -> str:
    """The file's text for the current rules, tables and onnx."""
    points, refused, gaps = opsetcases.generate()
    lines = ["{"]
    for key, rows in (("points", points), ("refused", refused), ("gaps", gaps)):
        lines.append(f'"{key}": [')
        lines += [json.dumps(list(row)) + "," for row in rows]
        lines[-1] = lines[-1].rstrip(",")
        lines.append("],")
    lines[-1] = "]"
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Write the file and say how many points and gaps it holds."""
    text = render()
    with open(opsetcases.POINTS_PATH, "w", encoding="utf-8") as f:
        f.write(text)
    data = json.loads(text)
    print(f"wrote {os.path.relpath(opsetcases.POINTS_PATH, HERE)}: {len(data['points'])} points, "
          f"{len(data['refused'])} refused, {len(data['gaps'])} gaps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

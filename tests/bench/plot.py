"""Recovery time per fault, the supervisor beside Docker's restart policy, as an SVG.

Hand-drawn SVG (no plotting library to install for one chart): one row per fault, a bar
for each subject from 0 to its median on a log scale, a whisker to its worst case, and
"never" where a subject did not recover. Written beside recovery.md as recovery.svg.
"""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import escape

SUBJECTS = (
    ("supervisor", "registry-supervisor", "#2b7bb9"),
    ("docker", "Docker's --restart always", "#d9822b"),
)
SHORT = {
    "kill": "process killed (SIGKILL)",
    "exit": "process exits (code 2)",
    "removed": "docker rm -f",
    "stopped": "docker stop",
    "hung": "hang (SIGSTOP)",
    "engine": "dockerd restart",
}
LOW_S, HIGH_S = 0.05, 60.0  # the log axis: fast repairs and a hang fit on one chart
LEFT, WIDTH, ROW, BAR = 250, 460, 46, 14


def _x(seconds: float) -> float:
    seconds = min(max(seconds, LOW_S), HIGH_S)
    return LEFT + WIDTH * math.log(seconds / LOW_S) / math.log(HIGH_S / LOW_S)


def recovery_svg(report: dict[str, Any]) -> str:
    """The chart for a recovery.json report."""
    cells = report["cells"]
    height = 70 + ROW * len(cells) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 40}" height="{height}"'
        ' font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">Recovery after a fault: median'
        f" bar, worst whisker (log scale; {escape(report.get('date', ''))})</text>",
    ]
    for i, (_, label, colour) in enumerate(SUBJECTS):
        out.append(f'<rect x="{10 + i * 220}" y="32" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{26 + i * 220}" y="42">{escape(label)}</text>')
    top = 60
    for row, (fault, cell) in enumerate(cells.items()):
        y0 = top + row * ROW
        label = SHORT.get(fault, cell["label"])
        out.append(f'<text x="10" y="{y0 + 20}">{escape(label)}</text>')
        for i, (key, _, colour) in enumerate(SUBJECTS):
            y = y0 + 4 + i * (BAR + 2)
            stats = cell.get(key)
            median = stats.get("median_s") if stats else None
            if median is None:
                out.append(f'<text x="{LEFT + 4}" y="{y + BAR - 3}" fill="{colour}">never</text>')
                continue
            out.append(
                f'<rect x="{LEFT}" y="{y}" width="{_x(median) - LEFT:.1f}" height="{BAR}"'
                f' fill="{colour}"/>'
            )
            worst = stats.get("worst_s") or median
            mid = y + BAR / 2
            out.append(
                f'<line x1="{_x(median):.1f}" y1="{mid}" x2="{_x(worst):.1f}" y2="{mid}"'
                f' stroke="black"/>'
            )
            out.append(f'<text x="{_x(worst) + 4:.1f}" y="{y + BAR - 3}">{median:.2f} s</text>')
    axis_y = top + ROW * len(cells) + 5
    out.append(
        f'<line x1="{LEFT}" y1="{axis_y}" x2="{LEFT + WIDTH}" y2="{axis_y}" stroke="black"/>'
    )
    for tick in (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60):
        x = _x(tick)
        out.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="black"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{tick:g} s</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"

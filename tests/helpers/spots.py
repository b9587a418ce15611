"""The runs ``e2e.spot`` jobs note in their ``SPOT_FILE``: where and when each started and ended."""

from __future__ import annotations

from pathlib import Path


class Spots:
    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[tuple[str, str, str, float]]:
        """(start|end, job id, node, time) of every run so far."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            what, _run, job_id, node, at = line.split()
            out.append((what, job_id, node, float(at)))
        return out

    def ended(self) -> set[str]:
        return {job_id for what, job_id, _, _ in self.lines() if what == "end"}

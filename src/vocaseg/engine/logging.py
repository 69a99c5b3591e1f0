"""Training logs: a CSV table (rewritten atomically), optional TensorBoard, a tqdm progress bar.

Only rank 0 logs (the trainer builds a :class:`TrainLogger` with ``enabled=False`` elsewhere). On
resume, rows after the resumed step are dropped so the CSV always matches the weights on disk. A
CSV that cannot be written (full disk) is one warning, not the end of the run: the rows stay in
memory and the next successful write holds them all.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

from tqdm import tqdm

from vocaseg.errors import VocasegWarning
from vocaseg.io import atomic_open

LOG_CSV = "log.csv"


class TrainLogger:
    """Collects scalar rows keyed by step; writes ``log.csv`` and TensorBoard events under ``folder``."""

    def __init__(
        self,
        folder: str | Path,
        total_steps: int,
        start_step: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
        enabled: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.enabled = enabled
        self.write_failed = False
        self.rows: list[dict[str, float]] = self._read_rows(start_step) if enabled else []
        self.writer = self._tensorboard() if enabled and tensorboard else None
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc="train",
            unit="it",
            dynamic_ncols=True,
            disable=not (enabled and progress),
        )

    def _read_rows(self, start_step: int) -> list[dict[str, float]]:
        path = self.folder / LOG_CSV
        if not path.is_file():
            return []
        with open(path, encoding="utf-8", newline="") as handle:
            rows = [
                {k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)
            ]
        return [row for row in rows if row["step"] <= start_step]

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            return None
        return SummaryWriter(log_dir=str(self.folder / "tensorboard"))

    def step(self, loss: float, it_per_s: float) -> None:
        """Advance the progress bar by one optimiser step."""
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", it_s=f"{it_per_s:.2f}", refresh=False)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Record one row (``step`` plus scalars) and rewrite ``log.csv``."""
        if not self.enabled:
            return
        row = {"step": float(step), **{k: float(v) for k, v in values.items()}}
        self.rows.append(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        self._write_csv()

    def _write_csv(self) -> None:
        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: int(v) if k == "step" else f"{v:.6g}" for k, v in row.items()})
        try:
            with atomic_open(self.folder / LOG_CSV, "w", encoding="utf-8", newline="") as handle:
                handle.write(buffer.getvalue())
        except OSError as err:
            if not self.write_failed:
                warnings.warn(
                    f"cannot write {self.folder / LOG_CSV} ({err.strerror or err}); the rows are "
                    "kept and written at the next successful attempt",
                    VocasegWarning,
                    stacklevel=2,
                )
            self.write_failed = True
        else:
            self.write_failed = False

    def message(self, text: str) -> None:
        """Print a line above the progress bar."""
        if self.enabled:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()

"""The batch results table: one row per image content (SHA-256), weights and scan options, in
SQLite or PostgreSQL through one SQLAlchemy schema.

A row is keyed by (content SHA-256, weights SHA-256, options): the same image under two
paths is one image, and a rescan with the same weights and options updates its row instead
of adding one, so however often a killed batch is rerun, every image is there exactly once.
Other options (a threshold, a pixel spacing) are another scan, with rows of their own.
Failed images are recorded with their reason and tried again by the next run; when a path
that had failed is scanned (the file was fixed), its failed row goes.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import sqlalchemy as sa

metadata = sa.MetaData()
results = sa.Table(
    "mccscan_results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_sha256", sa.String(64), nullable=False),
    sa.Column("weights_sha256", sa.String(64), nullable=False),
    sa.Column("options", sa.String(256), nullable=False),  # JSON of the scan options that change a result
    sa.Column("image_path", sa.Text, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),  # "done" or "failed"
    sa.Column("error", sa.Text),
    sa.Column("n_clusters", sa.Integer),  # reported clusters (score ≥ threshold)
    sa.Column("counts", sa.Text),  # JSON: tile counts
    sa.Column("clusters", sa.Text),  # JSON: the reported clusters, as in the scan JSON
    sa.Column("model_name", sa.String(64), nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("scan_s", sa.Float),  # read + scan time of this image, s
    sa.Column("worker", sa.String(128)),
    sa.Column("finished_at", sa.Float, nullable=False),  # Unix time
    sa.UniqueConstraint("image_sha256", "weights_sha256", "options", name="mccscan_results_image_weights_options"),
)
COLUMNS = [c.name for c in results.columns if c.name != "id"]
STATUSES = ("done", "failed")


def create_table(engine) -> None:
    metadata.create_all(engine)


def options_key(options: dict) -> str:
    """The scan options as the table stores them: canonical JSON."""
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def done_images(engine, weights_sha256: str, options: str) -> set[str]:
    """The SHA-256 of every image already done with these weights and options."""
    query = sa.select(results.c.image_sha256).where(results.c.weights_sha256 == weights_sha256,
                                                    results.c.options == options, results.c.status == "done")
    with engine.connect() as db:
        return set(db.scalars(query))


def result_row(*, image_path: str, image_sha256: str, weights_sha256: str, options: str, model_name: str,
               status: str, error: str | None = None, result=None, scan_s: float | None = None,
               worker: str = "") -> dict:
    """A table row; `result` is the ScanResult of a done image."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    row = dict(image_path=image_path, image_sha256=image_sha256, weights_sha256=weights_sha256, options=options,
               model_name=model_name, status=status, error=error, scan_s=scan_s, worker=worker,
               finished_at=time.time(), n_clusters=None, counts=None, clusters=None, threshold=None)
    if result is not None:
        row.update(n_clusters=len(result.findings), counts=json.dumps(result.counts), threshold=result.threshold,
                   clusters=json.dumps([c.to_dict() for c in result.findings]))
    return row


INSERTS = {"sqlite": "sqlalchemy.dialects.sqlite", "postgresql": "sqlalchemy.dialects.postgresql"}


def record(engine, row: dict) -> None:
    """Insert a row, or replace the one for the same image, weights and options (never a second
    row); a done row also removes the failed rows its path left with other content."""
    import importlib

    insert = importlib.import_module(INSERTS[engine.dialect.name]).insert
    statement = insert(results).values(**row)
    statement = statement.on_conflict_do_update(index_elements=["image_sha256", "weights_sha256", "options"],
                                                set_={k: statement.excluded[k] for k in COLUMNS})
    with engine.begin() as db:
        db.execute(statement)
        if row["status"] == "done":
            db.execute(sa.delete(results).where(
                results.c.image_path == row["image_path"], results.c.weights_sha256 == row["weights_sha256"],
                results.c.options == row["options"], results.c.status == "failed",
                results.c.image_sha256 != row["image_sha256"]))


def rows(engine, weights_sha256: str | None = None, options: str | None = None) -> list[dict]:
    """Every row (for these weights and options), oldest first."""
    query = sa.select(*[results.c[k] for k in COLUMNS]).order_by(results.c.id)
    if weights_sha256 is not None:
        query = query.where(results.c.weights_sha256 == weights_sha256)
    if options is not None:
        query = query.where(results.c.options == options)
    with engine.connect() as db:
        return [dict(r._mapping) for r in db.execute(query)]


def export_csv(engine, path: str | Path, weights_sha256: str | None = None, options: str | None = None) -> Path:
    """The table (for these weights and options) as CSV, its times in ISO 8601 (UTC) for a
    spreadsheet rather than Unix seconds."""
    import io
    from datetime import datetime, timezone

    from mccscan.atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(engine, weights_sha256, options):
        when = datetime.fromtimestamp(row["finished_at"], timezone.utc)
        writer.writerow({**row, "finished_at": when.isoformat(timespec="seconds")})
    return atomic_write_text(path, buf.getvalue())

"""Dataset readers: each indexes a dataset on disk as `MammogramRecord`s (see `base`)."""

from __future__ import annotations

from pathlib import Path

from mccscan.datasets.base import DatasetIndex
from mccscan.errors import MissingDataError, UnknownNameError

SOURCES = ("inbreast", "cbis-ddsm", "mini-mias", "folder", "phantom")


def read_source(source: str, root: str | Path, *, pixel_spacing_mm: float | None = None,
                phantom_images: int = 10, phantom_size="small") -> DatasetIndex:
    """Index a dataset on disk. For "phantom", first write `phantom_images` synthetic
    mammograms into `root` in INbreast's layout (unless it already holds them), then read
    them back with the INbreast reader, so that path is exercised end to end."""
    root = Path(root)
    if source != "phantom" and not root.is_dir():
        raise MissingDataError(f"{root}: does not exist or is not a folder")
    if source == "inbreast":
        from mccscan.datasets.inbreast import read_inbreast
        return read_inbreast(root)
    if source == "cbis-ddsm":
        from mccscan.datasets.cbis_ddsm import read_cbis_ddsm
        return read_cbis_ddsm(root, pixel_spacing_mm)
    if source == "mini-mias":
        from mccscan.datasets.mini_mias import read_mini_mias
        return read_mini_mias(root)
    if source == "folder":
        from mccscan.datasets.folder import read_folder
        return read_folder(root)
    if source == "phantom":
        from mccscan.datasets.inbreast import read_inbreast
        from mccscan.datasets.phantom import write_inbreast
        if not (root / "AllDICOMs").is_dir():
            write_inbreast(root, range(phantom_images), size=phantom_size)
        index = read_inbreast(root)
        index.source = "phantom"
        index.notes.append("synthetic phantom mammograms (mccscan.datasets.phantom), not patient data, "
                           "written in INbreast's layout and read by the INbreast reader")
        return index
    raise UnknownNameError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")

"""A corpus of bad (and awkward but valid) mammogram files, written into a folder.

Each case says what a correct answer is: "error" — a clear refusal naming the file (at
upload, or a failed scan); "ok" — a scan that finishes (possibly with a warning). Used by
tests/test_bad_inputs.py and by benchmarks/bad_input_table.py (the before/after table).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Case:
    name: str  # the file name (its kind, readable)
    expect: str  # "error" or "ok"
    says: str = ""  # a fragment the error message (or a warning) must contain
    status: tuple[int, ...] = ()  # acceptable HTTP statuses of the upload (202: accepted, then done or failed)


def fake_png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A greyscale PNG whose header claims width×height, with valid CRCs and the given
    compressed data (a tiny stub by default): for files that only decoding can refuse."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 10) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _dicom(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    from mccscan.io import write_dicom

    return write_dicom(path, pixels, **kwargs)


def _edit_dicom(source: Path, path: Path, edit) -> Path:
    """A copy of a DICOM with `edit(ds)` applied, broken values included (validation is off)."""
    import pydicom
    from pydicom import config

    saved = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    config.settings.reading_validation_mode = config.settings.writing_validation_mode = config.IGNORE
    try:
        ds = pydicom.dcmread(source)
        edit(ds)
        ds.save_as(path, enforce_file_format=False)
    finally:
        config.settings.reading_validation_mode, config.settings.writing_validation_mode = saved
    return path


def write_corpus(folder: Path, image: np.ndarray) -> list[Case]:
    """Write every case into `folder`; `image` is a float mammogram in [0, 1] (≥ 300 px a side)."""
    import pydicom
    from pydicom.uid import RLELossless

    folder.mkdir(parents=True, exist_ok=True)
    u8 = np.round(image * 255).astype(np.uint8)
    u16 = np.round(image * 16383).astype(np.uint16)
    good_dcm = _dicom(folder / ".good.dcm", u16, bits_stored=14, pixel_spacing_mm=0.07)
    cases: list[Case] = []

    def add(name: str, data: bytes | None, expect: str, says: str = "", status: tuple[int, ...] = ()):
        if data is not None:
            (folder / name).write_bytes(data)
        cases.append(Case(name, expect, says, status))

    # not images at all
    add("zero-byte.png", b"", "error", "file is empty", (400,))
    add("random-bytes.png", np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "error",
        "not a recognised image format", (415,))
    add("text-named.png", b"a report, not an image\n" * 20, "error", "not a recognised image format", (415,))
    add("pdf-named.dcm", b"%PDF-1.4\n" + b"0" * 400, "error", "not a recognised image format", (415,))
    # truncated files
    Image.fromarray(u8).save(folder / ".full.png")
    png = (folder / ".full.png").read_bytes()
    add("truncated.png", png[: len(png) // 2], "error", "corrupt or truncated", (422,))
    Image.fromarray(u8).save(folder / ".full.jpg", quality=90)
    jpg = (folder / ".full.jpg").read_bytes()
    add("truncated.jpg", jpg[: len(jpg) // 3], "error", "truncated", (202, 422))
    dcm = good_dcm.read_bytes()
    add("truncated.dcm", dcm[: len(dcm) - len(dcm) // 3], "error", "truncated", (202, 422))
    # DICOMs a mammography reader refuses, and why
    _edit_dicom(good_dcm, folder / "no-pixel-data.dcm", lambda ds: delattr(ds, "PixelData"))
    add("no-pixel-data.dcm", None, "error", "no pixel data", (422,))

    def multi_frame(ds):
        ds.NumberOfFrames = 2
        ds.PixelData = ds.PixelData * 2
    _edit_dicom(good_dcm, folder / "multi-frame.dcm", multi_frame)
    add("multi-frame.dcm", None, "error", "multi-frame", (415,))
    rgb = np.repeat(u8[..., None], 3, axis=2)

    def to_rgb(ds):
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = rgb.tobytes()
    _edit_dicom(good_dcm, folder / "rgb.dcm", to_rgb)
    add("rgb.dcm", None, "error", "not greyscale", (415,))
    _edit_dicom(good_dcm, folder / "rows-zero.dcm", lambda ds: setattr(ds, "Rows", 0))
    add("rows-zero.dcm", None, "error", "zero size", (422,))

    def bad_spacing(ds):  # raw bytes: pydicom refuses to set a DS that is not a number
        from pydicom.dataelem import RawDataElement
        from pydicom.tag import Tag

        ds._dict[Tag(0x00280030)] = RawDataElement(Tag(0x00280030), "DS", 14, b"abcdef\\ghijkl", 0, False, True)
        del ds.ImagerPixelSpacing
    _edit_dicom(good_dcm, folder / "spacing-not-a-number.dcm", bad_spacing)
    add("spacing-not-a-number.dcm", None, "error", "PixelSpacing", (422,))
    _edit_dicom(good_dcm, folder / "spacing-1e-6.dcm", lambda ds: setattr(ds, "PixelSpacing", ["1e-6", "1e-6"]))
    add("spacing-1e-6.dcm", None, "error", "outside", (422,))

    def eight_bit_header(ds):
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    _edit_dicom(good_dcm, folder / "bits-allocated-8-with-16-bit-data.dcm", eight_bit_header)
    add("bits-allocated-8-with-16-bit-data.dcm", None, "error", "bits-allocated-8-with-16-bit-data.dcm",
        (202, 422))
    _edit_dicom(good_dcm, folder / "unknown-transfer-syntax.dcm",
                lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.4.5.6.7"))
    add("unknown-transfer-syntax.dcm", None, "error", "transfer syntax", (415,))
    # too large: as stored, or only once resampled to 70 µm
    add("decompression-bomb.png", fake_png(30000, 30000), "error", "above the limit", (413,))
    coarse = np.full((1500, 1500), 200, np.uint8)
    _dicom(folder / "coarse-1mm-grows-past-the-limit.dcm", coarse, pixel_spacing_mm=1.0)
    add("coarse-1mm-grows-past-the-limit.dcm", None, "error", "once resampled", (413,))
    Image.fromarray(np.full((20, 20000), 128, np.uint8)).save(folder / "long-strip.png")
    add("long-strip.png", None, "error", "no mammogram", (413,))
    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(folder / "one-pixel.png")
    add("one-pixel.png", None, "error", "smaller than one", (422,))
    # awkward but valid: each must scan
    _edit_dicom(good_dcm, folder / "monochrome1.dcm", lambda ds: (
        setattr(ds, "PhotometricInterpretation", "MONOCHROME1"),
        setattr(ds, "PixelData", (16383 - u16).astype(np.uint16).tobytes())))
    add("monochrome1.dcm", None, "ok", status=(202,))
    ds = pydicom.dcmread(good_dcm)
    ds.compress(RLELossless)
    ds.save_as(folder / "rle.dcm")
    add("rle.dcm", None, "ok", status=(202,))
    Image.fromarray(u16).save(folder / "16-bit.png")
    add("16-bit.png", None, "ok", status=(202,))
    Image.fromarray(rgb).save(folder / "rgb.png")
    add("rgb.png", None, "ok", status=(202,))
    Image.fromarray(np.dstack([rgb, np.full(u8.shape, 255, np.uint8)])).save(folder / "rgba.png")
    add("rgba.png", None, "ok", status=(202,))
    Image.fromarray(u8).convert("P").save(folder / "palette.png")
    add("palette.png", None, "ok", status=(202,))
    Image.fromarray(u8).save(folder / "really-a-png.dcm", format="PNG")
    add("really-a-png.dcm", None, "ok", status=(202,))
    (folder / "really-a-dicom.png").write_bytes(dcm)
    add("really-a-dicom.png", None, "ok", status=(202,))
    Image.fromarray(np.zeros_like(u8)).save(folder / "all-black.png")
    add("all-black.png", None, "ok", "no breast found", (202,))
    Image.fromarray(np.full_like(u8, 255)).save(folder / "all-white.png")
    add("all-white.png", None, "ok", "no breast found", (202,))
    with_inf = (image * 1000).astype(np.float32)
    with_inf[5, 5] = np.inf
    Image.fromarray(with_inf, mode="F").save(folder / "float-with-inf.tif")
    add("float-with-inf.tif", None, "ok", "NaN or infinite", (202,))
    with_nan = (image * 1000).astype(np.float32)
    with_nan[:40, :40] = np.nan
    Image.fromarray(with_nan, mode="F").save(folder / "float-with-nan.tif")
    add("float-with-nan.tif", None, "ok", "NaN or infinite", (202,))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90° clockwise to view
    Image.fromarray(np.ascontiguousarray(np.rot90(u8))).save(folder / "exif-rotated.jpg", exif=exif, quality=95)
    add("exif-rotated.jpg", None, "ok", status=(202,))
    Image.fromarray(u8).save(folder / "名前-überprüft.png")
    add("名前-überprüft.png", None, "ok", status=(202,))
    for hidden in (".good.dcm", ".full.png", ".full.jpg"):
        (folder / hidden).unlink()
    return cases

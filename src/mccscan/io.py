"""Read any mammogram into a float32 image in [0, 1] plus its pixel spacing.

Formats: PNG (8/16 bit), JPEG, TIFF, PGM through Pillow; DICOM through pydicom (Modality
LUT applied, MONOCHROME1 inverted, compressed syntaxes that pydicom decodes without
extra plugins, e.g. RLE Lossless and Deflate). The format is sniffed from the content,
never trusted from the extension. Every failure raises `MammogramError` naming the file.

Intensity: 8-bit images are divided by 255 (the paper's normalisation); deeper images
(16-bit PNG/TIFF/PGM, DICOM) are stretched from their minimum to their maximum, the
usual DICOM→PNG conversion.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

SCAN_PIXEL_SPACING_MM = 0.07  # the paper's 70 µm: a 144×144 patch is 1 cm²
DEFAULT_MAX_PIXELS = 100_000_000


class MammogramError(ValueError):
    """A mammogram could not be read; the message names the file and the problem.

    `reason` sorts problems for callers that answer differently (a server's HTTP status):
    "empty", "unsupported" (not an image format we read), "too_large" (pixel limit) or
    "unreadable" (corrupt, truncated, undecodable).
    """

    def __init__(self, path: str | Path, problem: str, reason: str = "unreadable"):
        self.path, self.problem, self.reason = str(path), problem, reason
        super().__init__(f"{path}: {problem}")


@dataclass
class Mammogram:
    image: np.ndarray  # float32, H×W, in [0, 1], bright = dense tissue
    pixel_spacing_mm: tuple[float, float] | None  # (row, column); None when unknown
    path: str
    format: str  # "DICOM", "PNG", "JPEG", …


def read_mammogram(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Mammogram:
    """Read a mammogram file; dimensions are checked before any pixel is decoded."""
    path = Path(path)
    head = _read_head(path)
    if head[128:132] == b"DICM" or path.suffix.lower() == ".dcm":
        return _read_dicom(path, max_pixels)
    return _read_pillow(path, max_pixels)


@dataclass
class MammogramInfo:
    format: str
    rows: int
    cols: int


def probe_mammogram(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> MammogramInfo:
    """Check a file is a readable mammogram without decoding its pixels (cheap, bounded memory).

    Catches what an upload can be: empty, not an image, too many pixels, truncated PNG or
    DICOM pixel data. A file that passes can still fail to decode; `read_mammogram` says why.
    """
    path = Path(path)
    head = _read_head(path)
    if head[128:132] == b"DICM" or path.suffix.lower() == ".dcm":
        ds = _open_dicom(path, max_pixels)
        rows, cols = int(ds.Rows), int(ds.Columns)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        expected = rows * cols * int(ds.get("BitsAllocated", 16)) // 8
        if syntax is not None and not syntax.is_compressed and len(ds.PixelData) < expected:
            raise MammogramError(path, f"truncated DICOM pixel data ({len(ds.PixelData)} of {expected} bytes)")
        return MammogramInfo("DICOM", rows, cols)
    with _open_pillow(path) as img:
        cols, rows = img.size
        _check_size(path, rows, cols, max_pixels)
        fmt = img.format or "image"
        try:
            img.verify()  # walks the chunks and checks CRCs (PNG) without decoding
        except (OSError, SyntaxError, ValueError) as exc:
            raise MammogramError(path, f"corrupt or truncated image ({exc})") from exc
    return MammogramInfo(fmt, rows, cols)


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise MammogramError(path, f"cannot open file ({exc.strerror or exc})") from exc
    if not head:
        raise MammogramError(path, "file is empty", "empty")
    return head


def _open_pillow(path: Path) -> Image.Image:
    """Open with Pillow, reading the header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError as exc:
        raise MammogramError(path, "not a recognised image format (expected PNG, JPEG, TIFF, PGM or DICOM)",
                             "unsupported") from exc
    except Image.DecompressionBombError as exc:
        raise MammogramError(path, f"image is above the limit Pillow can decode safely ({exc})", "too_large") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise MammogramError(path, f"corrupt or truncated image ({exc})") from exc


def _check_size(path: Path, rows: int, cols: int, max_pixels: int) -> None:
    if rows <= 0 or cols <= 0:
        raise MammogramError(path, f"image has zero size ({cols}×{rows})")
    if rows * cols > max_pixels:
        raise MammogramError(
            path, f"image is {cols}×{rows} = {rows * cols / 1e6:.0f} Mpx, above the limit of "
                  f"{max_pixels / 1e6:.0f} Mpx (raise it with --max-pixels if this is intended)", "too_large")


def _stretch(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.float32)
    lo, hi = float(pixels.min()), float(pixels.max())
    return (pixels - lo) / (hi - lo) if hi > lo else np.zeros_like(pixels)


def _read_pillow(path: Path, max_pixels: int) -> Mammogram:
    img = _open_pillow(path)
    try:
        with img:
            cols, rows = img.size
            _check_size(path, rows, cols, max_pixels)
            fmt = img.format or "image"
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                image = _stretch(np.asarray(img))
            else:
                image = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except MammogramError:
        raise
    except Image.DecompressionBombError as exc:
        raise MammogramError(path, f"image is above the limit Pillow can decode safely ({exc})", "too_large") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise MammogramError(path, f"corrupt or truncated image ({exc})") from exc
    return Mammogram(np.ascontiguousarray(image), None, str(path), fmt)


def _open_dicom(path: Path, max_pixels: int):
    """Parse a DICOM file (pixel bytes read, not decoded) and check it is one greyscale frame."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError) as exc:
        raise MammogramError(path, f"not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise MammogramError(path, "DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_size(path, rows, cols, max_pixels)
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise MammogramError(path, "multi-frame DICOM (tomosynthesis?) is not supported; export one frame",
                             "unsupported")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise MammogramError(path, "DICOM is not greyscale (SamplesPerPixel ≠ 1)", "unsupported")
    return ds


def _read_dicom(path: Path, max_pixels: int) -> Mammogram:
    from pydicom.pixels import apply_modality_lut

    ds = _open_dicom(path, max_pixels)
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", syntax)
        raise MammogramError(path, f"compressed DICOM ({name}) cannot be decoded here ({exc})",
                             "unsupported") from exc
    except (ValueError, EOFError, AttributeError, KeyError) as exc:
        raise MammogramError(path, f"corrupt or truncated DICOM pixel data ({exc})") from exc
    image = _stretch(apply_modality_lut(pixels, ds))
    if ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        image = 1.0 - image
    return Mammogram(np.ascontiguousarray(image), _dicom_spacing(ds), str(path), "DICOM")


def _dicom_spacing(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return float(value[0]), float(value[1])
    return None


def resample_to_spacing(image: np.ndarray, pixel_spacing_mm: tuple[float, float],
                        target_spacing_mm: float = SCAN_PIXEL_SPACING_MM) -> np.ndarray:
    """Resample so each pixel is `target_spacing_mm` wide (antialiased when shrinking)."""
    rows, cols = image.shape
    new_rows = max(1, round(rows * pixel_spacing_mm[0] / target_spacing_mm))
    new_cols = max(1, round(cols * pixel_spacing_mm[1] / target_spacing_mm))
    if (new_rows, new_cols) == (rows, cols):
        return image
    with torch.inference_mode():
        out = F.interpolate(torch.from_numpy(image)[None, None], size=(new_rows, new_cols),
                            mode="bilinear", align_corners=False, antialias=True)
        return out[0, 0].clamp_(0, 1).numpy()


@dataclass
class ScanImage:
    """A mammogram at the scan resolution (70 µm), with where it came from."""

    image: np.ndarray
    source: Mammogram
    pixel_spacing_mm: float  # spacing of the source file that was used (read or given)
    spacing_assumed: bool  # True when neither the file nor the user gave a spacing


def load_for_scan(path: str | Path, *, pixel_spacing_mm: float | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> ScanImage:
    """Read a mammogram and bring it to 70 µm pixels.

    `pixel_spacing_mm` overrides (or supplies) the file's spacing. A file without one
    (PNG, JPEG, …) is assumed to be at 70 µm already; `spacing_assumed` says so.
    """
    mammogram = read_mammogram(path, max_pixels=max_pixels)
    if pixel_spacing_mm is not None:
        if not pixel_spacing_mm > 0:
            raise MammogramError(path, f"pixel spacing must be positive, got {pixel_spacing_mm}")
        spacing = (pixel_spacing_mm, pixel_spacing_mm)
    else:
        spacing = mammogram.pixel_spacing_mm or (SCAN_PIXEL_SPACING_MM, SCAN_PIXEL_SPACING_MM)
    assumed = pixel_spacing_mm is None and mammogram.pixel_spacing_mm is None
    image = resample_to_spacing(mammogram.image, spacing)
    _check_size(Path(path), *image.shape, max_pixels)
    return ScanImage(image, mammogram, float(np.mean(spacing)), assumed)


def write_dicom(path: str | Path, pixels: np.ndarray, *, bits_stored: int | None = None,
                pixel_spacing_mm: float | None = None, laterality: str = "", view: str = "",
                patient_id: str = "ANONYMOUS", description: str = "",
                photometric: str = "MONOCHROME2") -> Path:
    """Write a single-frame greyscale digital-mammography DICOM (explicit VR little endian)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError("pixels must be a 2-D uint8 or uint16 array")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray, For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.SeriesDescription = "MG", patient_id, description
    ds.ImageLaterality, ds.ViewPosition = laterality, view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    bits_stored = bits_stored or ds.BitsAllocated
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{pixel_spacing_mm:.4f}"] * 2
    ds.PixelData = pixels.tobytes()
    path = Path(path)
    ds.save_as(path, enforce_file_format=True)
    return path

"""Read any mammogram into a float32 image in [0, 1] plus its pixel spacing.

Formats: PNG (8/16 bit), JPEG (EXIF orientation applied), TIFF (integer or float), PGM
through Pillow; DICOM through pydicom (Modality LUT applied, MONOCHROME1 inverted, every
transfer syntax pydicom has a decoder for here: uncompressed, RLE, JPEG Lossless, JPEG-LS,
JPEG 2000 through the pylibjpeg plugins). The format is sniffed from the content, never
trusted from the extension. Every failure raises `MammogramError` naming the file.

DICOM intent: a "for processing" image whose values are linear in exposure
(PixelIntensityRelationship LIN) is log-transformed, and its PixelIntensityRelationshipSign
decides which way is dense, so raw detector output scans like the processed image. A VOI
LUT or window is not applied: it only maps and clips values for display, and clipping
saturates MCs in dense tissue, while the detector normalises contrast locally itself.

Before a pixel is decoded the header is checked: the size both as stored and as it will
be scanned at 70 µm (so a small file with a coarse spacing cannot grow past the limit
when resampled), and the pixel spacing (0.02–1.0 mm).

Intensity: 8-bit images are divided by 255 (the paper's normalisation); deeper images
(16-bit PNG/TIFF/PGM, float TIFF, DICOM) are stretched from their minimum to their
maximum, the usual DICOM→PNG conversion. NaN or infinite pixels are set to the nearest
end of that range and reported in `Mammogram.warnings`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mccscan.errors import MccscanError

SCAN_PIXEL_SPACING_MM = 0.07  # the paper's 70 µm: a 144×144 patch is 1 cm²
DEFAULT_MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".pgm", ".dcm", ".dicom")  # names of the formats read here
PIXEL_SPACING_RANGE_MM = (0.02, 1.0)  # finer or coarser is no mammogram: a typo or a broken header
MAX_SIDE_PX = 16_384  # at 70 µm: 1.15 m, far beyond any breast (JPEG's own limit is 65,535)


class MammogramError(MccscanError, ValueError):
    """A mammogram could not be read; the message names the file and the problem.

    `reason` sorts problems for callers that answer differently (a server's HTTP status):
    "empty", "unsupported" (not an image format we read), "too_large" (pixel limit) or
    "unreadable" (corrupt, truncated, undecodable, a bad pixel spacing). `setting` names the
    setting that would fix it ("pixel_spacing", "max_pixels"), so that each front end can say
    how in its own terms (`problem_and_fix`); the message says it as the command line does.
    """

    def __init__(self, path: str | Path, problem: str, reason: str = "unreadable", setting: str | None = None):
        self.path, self.problem, self.reason, self.setting = str(path), problem, reason, setting
        super().__init__(f"{path}: {self.problem_and_fix()}")

    def problem_and_fix(self, hints: dict[str, str] | None = None) -> str:
        """The problem and, where a setting fixes it, how (`setting_fix`)."""
        return self.problem + (f"; {setting_fix(self.setting, hints)}" if self.setting else "")


def setting_fix(setting: str, hints: dict[str, str] | None = None) -> str:
    """How to change `setting`, in the words of `hints`, a front end's (`CLI_HINTS` by default)."""
    return (hints or CLI_HINTS)[setting]


CLI_HINTS = {"pixel_spacing": "give the right one in mm with --pixel-spacing",
             "max_pixels": "raise --max-pixels if this is intended"}  # how the command line fixes each setting


@dataclass
class Mammogram:
    image: np.ndarray  # float32, H×W, in [0, 1], bright = dense tissue
    pixel_spacing_mm: tuple[float, float] | None  # (row, column) from the file; None when it has none
    path: str
    format: str  # "DICOM", "PNG", "JPEG", …
    warnings: list[str] = field(default_factory=list)  # what was fixed up while reading (non-finite pixels)
    laterality: str = ""  # "L" or "R" from a DICOM header (ImageLaterality), "" when unknown
    view: str = ""  # "CC", "MLO", … (ViewPosition), "" when unknown


@dataclass
class MammogramInfo:
    format: str
    rows: int
    cols: int
    scan_shape: tuple[int, int]  # (rows, cols) once resampled to SCAN_PIXEL_SPACING_MM


@dataclass
class _Header:
    """What a file says before its pixels are decoded."""

    format: str
    rows: int
    cols: int
    spacing: tuple[float, float] | None  # from the header
    spacing_problem: str | None  # a header spacing that could not be used, and why
    decode: Callable[[], tuple[np.ndarray, list[str]]]  # → (image in [0, 1], warnings)
    verify: Callable[[], None]  # a cheap integrity check without decoding
    laterality: str = ""
    view: str = ""


def read_mammogram(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                   pixel_spacing_mm: float | None = None) -> Mammogram:
    """Read a mammogram file. `pixel_spacing_mm` (the user's) overrides the header's; the
    size and spacing are checked before any pixel is decoded."""
    path = Path(path)
    header = _header(path)
    _check_header(path, header, max_pixels, pixel_spacing_mm)
    header.verify()
    try:
        image, notes = header.decode()
    except MammogramError:
        raise
    except Image.DecompressionBombError as exc:
        raise MammogramError(path, f"image is above the limit Pillow can decode safely ({exc})", "too_large") from exc
    except (OSError, SyntaxError, EOFError) as exc:
        raise MammogramError(path, f"corrupt or truncated image ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 — a decoder's surprise is still this file's problem
        raise MammogramError(path, f"the pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    if image.shape != (header.rows, header.cols):  # e.g. BitsAllocated that does not fit the pixel data
        raise MammogramError(path, f"the pixel data decodes to shape {image.shape}, but the header says "
                                   f"{header.cols}×{header.rows} greyscale")
    if not np.isfinite(image).all():  # a decoder must never hand on NaN
        raise MammogramError(path, "decoded pixels are not finite")
    return Mammogram(np.ascontiguousarray(image), header.spacing, str(path), header.format, notes,
                     header.laterality, header.view)


def probe_mammogram(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                    pixel_spacing_mm: float | None = None) -> MammogramInfo:
    """Check a file is a readable mammogram without decoding its pixels (cheap, bounded memory).

    Catches what an upload can be: empty, not an image, too many pixels (as stored or once
    resampled to 70 µm), a bad pixel spacing, truncated PNG or DICOM pixel data, a transfer
    syntax with no decoder here. A file that passes can still fail to decode;
    `read_mammogram` says why.
    """
    path = Path(path)
    header = _header(path)
    shape = _check_header(path, header, max_pixels, pixel_spacing_mm)
    header.verify()
    return MammogramInfo(header.format, header.rows, header.cols, shape)


def scan_spacing(path: str | Path, given_mm: float | None,
                 header_mm: tuple[float, float] | None, header_problem: str | None = None) -> tuple[float, float]:
    """The (row, column) spacing a file is scanned at: the user's, else the header's, else
    70 µm; refused when outside PIXEL_SPACING_RANGE_MM or unreadable."""
    lo, hi = PIXEL_SPACING_RANGE_MM
    if given_mm is not None:
        if not given_mm > 0:
            raise MammogramError(path, f"pixel spacing must be positive, got {given_mm}")
        if not lo <= given_mm <= hi:
            raise MammogramError(path, f"pixel spacing {given_mm:g} mm is outside {lo}–{hi} mm; a mammogram's "
                                       "is 0.05–0.1 mm (0.2 mm for mini-MIAS)")
        return given_mm, given_mm
    if header_problem is not None:
        raise MammogramError(path, header_problem, setting="pixel_spacing")
    if header_mm is None:
        return SCAN_PIXEL_SPACING_MM, SCAN_PIXEL_SPACING_MM
    if not all(lo <= v <= hi for v in header_mm):
        raise MammogramError(path, f"the header's pixel spacing {header_mm[0]:g} × {header_mm[1]:g} mm is outside "
                                   f"{lo}–{hi} mm", setting="pixel_spacing")
    return header_mm


def scan_shape(rows: int, cols: int, spacing_mm: tuple[float, float],
               target_spacing_mm: float = SCAN_PIXEL_SPACING_MM) -> tuple[int, int]:
    """(rows, cols) of an image once resampled to `target_spacing_mm`."""
    return (max(1, round(rows * spacing_mm[0] / target_spacing_mm)),
            max(1, round(cols * spacing_mm[1] / target_spacing_mm)))


def _check_header(path: Path, header: _Header, max_pixels: int, given_mm: float | None) -> tuple[int, int]:
    """Refuse what cannot be read or is too large; the (rows, cols) it will have at 70 µm."""
    _check_size(path, header.rows, header.cols, max_pixels)
    spacing = scan_spacing(path, given_mm, header.spacing, header.spacing_problem)
    rows, cols = scan_shape(header.rows, header.cols, spacing)
    if rows * cols > max_pixels:
        raise MammogramError(
            path, f"image is {header.cols}×{header.rows} px at {spacing[1]:g} mm, {cols}×{rows} = "
                  f"{rows * cols / 1e6:.0f} Mpx once resampled to {SCAN_PIXEL_SPACING_MM} mm: above the limit of "
                  f"{max_pixels / 1e6:.0f} Mpx (is the pixel spacing right?)", "too_large", "max_pixels")
    if max(rows, cols) > MAX_SIDE_PX:
        raise MammogramError(path, f"image is {cols}×{rows} px at {SCAN_PIXEL_SPACING_MM} mm: a side longer than "
                                   f"{MAX_SIDE_PX} px ({MAX_SIDE_PX * SCAN_PIXEL_SPACING_MM / 10:.0f} cm) is no "
                                   "mammogram", "too_large")
    return rows, cols


def _header(path: Path) -> _Header:
    head = _read_head(path)
    if head[128:132] == b"DICM":
        return _dicom_header(path)
    return _pillow_header(path)


def _read_head(path: Path) -> bytes:
    if path.is_dir():
        raise MammogramError(path, "a folder, not an image file (`mccscan batch FOLDER` scans the images in one)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise MammogramError(path, f"cannot open file ({exc.strerror or exc})") from exc
    if not head:
        raise MammogramError(path, "file is empty", "empty")
    return head


def _check_size(path: Path, rows: int, cols: int, max_pixels: int) -> None:
    if rows <= 0 or cols <= 0:
        raise MammogramError(path, f"image has zero size ({cols}×{rows})")
    if rows * cols > max_pixels:
        raise MammogramError(
            path, f"image is {cols}×{rows} = {rows * cols / 1e6:.0f} Mpx, above the limit of "
                  f"{max_pixels / 1e6:.0f} Mpx", "too_large", "max_pixels")


def _stretch(pixels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Min–max stretch to [0, 1] over the finite pixels; NaN and −inf go to 0, +inf to 1.
    In place on one float32 copy: a 100 Mpx image needs 0.4 GB here, not 1.6."""
    notes = []
    if np.issubdtype(pixels.dtype, np.integer):
        lo, hi = int(pixels.min()), int(pixels.max())
        image = pixels.astype(np.float32)
    else:
        image = pixels.astype(np.float32)
        finite = np.isfinite(image)
        if not finite.all():
            n_bad = int(image.size - finite.sum())
            notes.append(f"{n_bad:,} pixel(s) are NaN or infinite; set to the darkest (NaN, −inf) or brightest "
                         "(+inf) value")
            fill_lo = float(image[finite].min()) if finite.any() else 0.0
            fill_hi = float(image[finite].max()) if finite.any() else 0.0
            image[~finite & (image == np.inf)] = fill_hi
            image[~finite & (image != np.inf)] = fill_lo
        del finite
        lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        image[...] = 0
        return image, notes
    image -= np.float32(lo)
    image *= np.float32(1 / (hi - lo))
    return image, notes


# ---- Pillow: PNG, JPEG, TIFF, PGM -------------------------------------------------------

def _pillow_header(path: Path) -> _Header:
    img = _open_pillow(path)
    cols, rows = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 — a broken EXIF block only loses the orientation
        orientation = 1
    if orientation in (5, 6, 7, 8):  # a quarter turn swaps the sides
        rows, cols = cols, rows

    def decode() -> tuple[np.ndarray, list[str]]:
        with Image.open(path) as raw:
            oriented = ImageOps.exif_transpose(raw)
            if oriented.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                return _stretch(np.asarray(oriented))
            return np.asarray(oriented.convert("L"), dtype=np.float32) / 255.0, []

    def verify() -> None:
        try:
            with Image.open(path) as again:
                again.verify()  # walks the chunks and checks CRCs (PNG) without decoding
        except (OSError, SyntaxError, ValueError) as exc:
            raise MammogramError(path, f"corrupt or truncated image ({exc})") from exc

    fmt = img.format or "image"
    img.close()
    return _Header(fmt, rows, cols, None, None, decode, verify)


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


# ---- DICOM --------------------------------------------------------------------------------

def _dicom_header(path: Path) -> _Header:
    """Parse a DICOM file (pixel bytes read, not decoded) and check it is one greyscale frame
    in a transfer syntax that can be decoded here."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        syntax = ds.file_meta.get("TransferSyntaxUID")
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MammogramError(path, f"not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise MammogramError(path, "DICOM file has no pixel data")
    if frames != 1:
        raise MammogramError(path, "multi-frame DICOM (tomosynthesis?) is not supported; export one frame",
                             "unsupported")
    if samples != 1:
        raise MammogramError(path, "DICOM is not greyscale (SamplesPerPixel ≠ 1)", "unsupported")
    _check_decoder(path, syntax)
    spacing, problem = _dicom_spacing(ds)

    def decode() -> tuple[np.ndarray, list[str]]:
        from pydicom.pixels import apply_modality_lut

        values = apply_modality_lut(ds.pixel_array, ds)
        raw = _linear_in_exposure(ds)
        if raw:  # log of exposure: attenuation, as a processed image shows it
            values = np.log(np.maximum(values.astype(np.float32), np.float32(1)))
        image, notes = _stretch(values)
        if _dense_is_dark(ds, raw):
            image = 1.0 - image
        return image, notes

    def verify() -> None:
        if syntax is not None and not syntax.is_compressed:
            expected = rows * cols * int(ds.get("BitsAllocated", 16) or 16) // 8
            if len(ds.PixelData) < expected:
                raise MammogramError(path, f"truncated DICOM pixel data ({len(ds.PixelData)} of {expected} bytes)")

    laterality = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper()
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    return _Header("DICOM", rows, cols, spacing, problem, decode, verify, laterality, view)


def _linear_in_exposure(ds) -> bool:
    """A "for processing" image whose values grow linearly with the X-ray exposure (raw
    detector output): it needs a log to look like a mammogram."""
    return (str(ds.get("PresentationIntentType", "")).upper() == "FOR PROCESSING"
            and str(ds.get("PixelIntensityRelationship", "")).upper() == "LIN")


def _dense_is_dark(ds, raw: bool) -> bool:
    """Whether high values mean less tissue. For raw images PixelIntensityRelationshipSign
    says it (+1: higher value, more X-rays reached the detector, so less tissue); otherwise
    the photometric interpretation (MONOCHROME1: high values are shown dark)."""
    sign = ds.get("PixelIntensityRelationshipSign")
    if raw and sign is not None:
        return int(sign) == 1
    return ds.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1"


def _check_decoder(path: Path, syntax) -> None:
    """Refuse, before decoding, a transfer syntax with no decoder installed here."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    if syntax is None:
        return  # pydicom assumes implicit VR little endian
    name = getattr(syntax, "name", str(syntax)) or str(syntax)
    try:
        if not UID(syntax).is_transfer_syntax:
            raise NotImplementedError
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError):
        raise MammogramError(path, f"unknown DICOM transfer syntax {syntax} ({name}); cannot decode its pixels",
                             "unsupported") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise MammogramError(path, f"compressed DICOM ({name}) cannot be decoded here (needs one of: {missing})",
                             "unsupported")


def _dicom_spacing(ds) -> tuple[tuple[float, float] | None, str | None]:
    """(row, column) spacing from PixelSpacing or ImagerPixelSpacing, or why it is unusable."""
    from pydicom.multival import MultiValue

    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = ds.get(keyword)
            if value is None or value == "":
                continue
            values = [float(v) for v in (value if isinstance(value, MultiValue) else [value])]
        except (TypeError, ValueError):
            return None, f"the header's {keyword} ({ds[keyword].repval}) is not a number"
        if len(values) != 2:
            return None, f"the header's {keyword} has {len(values)} values, not 2"
        return (values[0], values[1]), None
    return None, None


def resample_to_spacing(image: np.ndarray, pixel_spacing_mm: tuple[float, float],
                        target_spacing_mm: float = SCAN_PIXEL_SPACING_MM) -> np.ndarray:
    """Resample so each pixel is `target_spacing_mm` wide (antialiased when shrinking)."""
    import torch  # only here: reading and probing a file need no torch
    from torch.nn import functional as F

    new_rows, new_cols = scan_shape(*image.shape, pixel_spacing_mm, target_spacing_mm)
    if (new_rows, new_cols) == image.shape:
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
    source_shape: tuple[int, int]  # rows, cols of the file as stored

    def without_pixels(self) -> "ScanImage":
        """The same, less its pixels at both resolutions: what travels beside the 70 µm image
        when another process scans it."""
        from dataclasses import replace

        empty = np.zeros((0, 0), np.float32)
        return replace(self, image=empty, source=replace(self.source, image=empty))


def load_for_scan(path: str | Path, *, pixel_spacing_mm: float | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> ScanImage:
    """Read a mammogram and bring it to 70 µm pixels.

    `pixel_spacing_mm` overrides (or supplies) the file's spacing. A file without one
    (PNG, JPEG, …) is assumed to be at 70 µm already; `spacing_assumed` says so.
    """
    mammogram = read_mammogram(path, max_pixels=max_pixels, pixel_spacing_mm=pixel_spacing_mm)
    spacing = scan_spacing(path, pixel_spacing_mm, mammogram.pixel_spacing_mm)
    assumed = pixel_spacing_mm is None and mammogram.pixel_spacing_mm is None
    image = resample_to_spacing(mammogram.image, spacing)
    return ScanImage(image, mammogram, float(np.mean(spacing)), assumed, tuple(mammogram.image.shape))


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

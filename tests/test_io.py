
import numpy as np
import pytest
from PIL import Image

from bad_inputs import fake_png
from mccscan.io import (MammogramError, load_for_scan, probe_mammogram, read_mammogram, resample_to_spacing,
                        write_dicom)


@pytest.fixture
def gradient():
    return np.tile(np.arange(0, 256, dtype=np.uint8), (40, 1))


def test_png_8bit_is_divided_by_255(tmp_path, gradient):
    Image.fromarray(gradient).save(tmp_path / "a.png")
    m = read_mammogram(tmp_path / "a.png")
    assert m.image.dtype == np.float32 and m.format == "PNG" and m.pixel_spacing_mm is None
    np.testing.assert_allclose(m.image, gradient / 255.0, atol=1e-7)


def test_png_16bit_is_stretched_to_unit_range(tmp_path):
    pixels = np.linspace(1000, 5000, 64 * 32).reshape(32, 64).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    m = read_mammogram(tmp_path / "a.png")
    assert m.image.min() == 0 and m.image.max() == pytest.approx(1)
    np.testing.assert_allclose(m.image, (pixels - 1000) / 4000.0, atol=1e-6)


@pytest.mark.parametrize("ext", ["jpg", "tif", "pgm"])
def test_other_formats(tmp_path, gradient, ext):
    Image.fromarray(gradient).save(tmp_path / f"a.{ext}")
    m = read_mammogram(tmp_path / f"a.{ext}")
    assert m.image.shape == gradient.shape
    assert np.abs(m.image - gradient / 255.0).mean() < 0.02


def test_content_is_sniffed_not_the_extension(tmp_path, gradient):
    Image.fromarray(gradient).save(tmp_path / "a.png")
    (tmp_path / "a.png").rename(tmp_path / "really_png.jpg")
    assert read_mammogram(tmp_path / "really_png.jpg").format == "PNG"
    write_dicom(tmp_path / "x.dcm", gradient)
    (tmp_path / "x.dcm").rename(tmp_path / "x.img")
    assert read_mammogram(tmp_path / "x.img").format == "DICOM"


def test_dicom_spacing_and_modality_lut(tmp_path):
    import pydicom

    pixels = np.arange(100 * 80, dtype=np.uint16).reshape(100, 80) % 4096
    write_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, pixel_spacing_mm=0.05)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.RescaleSlope, ds.RescaleIntercept = -1, 4095  # a LUT that inverts the values
    ds.save_as(tmp_path / "b.dcm")
    a, b = read_mammogram(tmp_path / "a.dcm"), read_mammogram(tmp_path / "b.dcm")
    assert a.pixel_spacing_mm == (0.05, 0.05)
    np.testing.assert_allclose(a.image, pixels / 4095.0, atol=1e-6)
    np.testing.assert_allclose(b.image, 1 - a.image, atol=1e-6)


def test_dicom_monochrome1_is_inverted_and_imager_spacing_is_used(tmp_path):
    import pydicom

    pixels = (np.arange(60 * 50, dtype=np.uint16).reshape(60, 50) * 3)
    write_dicom(tmp_path / "a.dcm", pixels, photometric="MONOCHROME1", pixel_spacing_mm=0.1)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    del ds.PixelSpacing
    ds.save_as(tmp_path / "a.dcm")
    m = read_mammogram(tmp_path / "a.dcm")
    assert m.pixel_spacing_mm == (0.1, 0.1)
    assert m.image[0, 0] == pytest.approx(1) and m.image[-1, -1] == pytest.approx(0)


@pytest.mark.parametrize("photometric, sign", [("MONOCHROME2", 1), ("MONOCHROME1", 1), ("MONOCHROME2", -1)])
def test_raw_for_processing_dicom_reads_like_the_processed_image(tmp_path, photometric, sign):
    """Raw detector output (linear in exposure) is log-transformed and oriented by its
    PixelIntensityRelationshipSign, so dense tissue is bright whatever the photometric says."""
    import pydicom

    density = np.linspace(0, 1, 60 * 50, dtype=np.float32).reshape(60, 50)  # 0 = fat, 1 = dense
    exposure = 60000 * np.exp(-3 * density)  # Beer–Lambert: dense tissue lets fewer X-rays through
    stored = exposure if sign == 1 else 65535 - exposure  # sign −1: high values where X-rays were stopped
    write_dicom(tmp_path / "raw.dcm", np.round(stored).astype(np.uint16), photometric=photometric)
    ds = pydicom.dcmread(tmp_path / "raw.dcm")
    ds.PresentationIntentType, ds.PixelIntensityRelationship = "FOR PROCESSING", "LIN" if sign == 1 else "LOG"
    ds.PixelIntensityRelationshipSign = sign
    ds.save_as(tmp_path / "raw.dcm")
    image = read_mammogram(tmp_path / "raw.dcm").image
    if sign == 1:  # log-transformed: linear in density again
        np.testing.assert_allclose(image, density, atol=2e-3)
    else:  # LOG already; only the orientation is read
        assert image[0, 0] == pytest.approx(0) and image[-1, -1] == pytest.approx(1)
        assert np.all(np.diff(image.ravel()) >= -1e-6)


def test_a_display_window_or_voi_lut_is_not_applied(tmp_path):
    """A window only maps and clips for display; clipping would saturate MCs in dense tissue."""
    import pydicom

    pixels = (np.arange(60 * 50, dtype=np.uint16).reshape(60, 50) * 10)
    write_dicom(tmp_path / "plain.dcm", pixels)
    ds = pydicom.dcmread(tmp_path / "plain.dcm")
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 15000, 2000, "SIGMOID"
    ds.save_as(tmp_path / "windowed.dcm")
    np.testing.assert_array_equal(read_mammogram(tmp_path / "windowed.dcm").image,
                                  read_mammogram(tmp_path / "plain.dcm").image)


def test_laterality_and_view_come_from_the_header(tmp_path):
    write_dicom(tmp_path / "a.dcm", np.ones((32, 32), np.uint16), laterality="R", view="MLO")
    m = read_mammogram(tmp_path / "a.dcm")
    assert (m.laterality, m.view) == ("R", "MLO")


def test_rle_compressed_dicom_decodes(tmp_path):
    import pydicom
    from pydicom.uid import RLELossless

    pixels = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 5)
    write_dicom(tmp_path / "a.dcm", pixels, pixel_spacing_mm=0.07)
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    np.testing.assert_allclose(read_mammogram(tmp_path / "rle.dcm").image,
                               read_mammogram(tmp_path / "a.dcm").image)


@pytest.mark.parametrize("name, content, message", [
    ("text.png", b"hello, I am not an image\n", "not a recognised image format"),
    ("empty.png", b"", "file is empty"),
    ("bomb.png", fake_png(20000, 20000), "above the limit"),
])
@pytest.mark.parametrize("reader", [read_mammogram, probe_mammogram])
def test_bad_files_raise_one_clear_error(tmp_path, name, content, message, reader):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(MammogramError, match=message) as info:
        reader(tmp_path / name)
    assert name in str(info.value)


@pytest.mark.parametrize("reader", [read_mammogram, probe_mammogram])
def test_truncated_png(tmp_path, gradient, reader):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MammogramError, match="corrupt or truncated") as info:
        reader(tmp_path / "t.png")
    assert "t.png" in str(info.value)


def test_probe_reads_size_and_format_of_good_files(tmp_path, gradient):
    Image.fromarray(gradient).save(tmp_path / "a.png")
    write_dicom(tmp_path / "a.dcm", np.ones((30, 20), np.uint16))
    assert (lambda i: (i.format, i.rows, i.cols))(probe_mammogram(tmp_path / "a.png")) == ("PNG", 40, 256)
    assert (lambda i: (i.format, i.rows, i.cols))(probe_mammogram(tmp_path / "a.dcm")) == ("DICOM", 30, 20)


def test_truncated_dicom_and_zero_size_dicom(tmp_path):
    import pydicom

    write_dicom(tmp_path / "a.dcm", np.ones((200, 200), np.uint16))
    data = (tmp_path / "a.dcm").read_bytes()
    (tmp_path / "t.dcm").write_bytes(data[: len(data) - 20000])
    for reader in (read_mammogram, probe_mammogram):
        with pytest.raises(MammogramError, match="t.dcm"):
            reader(tmp_path / "t.dcm")
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.Rows = 0
    ds.save_as(tmp_path / "z.dcm")
    with pytest.raises(MammogramError, match="zero size"):
        read_mammogram(tmp_path / "z.dcm")


def test_undecodable_compressed_dicom(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    write_dicom(tmp_path / "a.dcm", np.ones((32, 32), np.uint16))
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 40])
    ds.save_as(tmp_path / "j2k.dcm")
    with pytest.raises(MammogramError, match="cannot be decoded") as info:
        read_mammogram(tmp_path / "j2k.dcm")
    assert "j2k.dcm" in str(info.value)


def test_pixel_limit_is_configurable(tmp_path, gradient):
    Image.fromarray(gradient).save(tmp_path / "a.png")
    with pytest.raises(MammogramError, match="above the limit") as info:
        read_mammogram(tmp_path / "a.png", max_pixels=1000)
    assert info.value.setting == "max_pixels" and "raise --max-pixels" in str(info.value)  # the CLI's fix
    assert info.value.problem_and_fix({"max_pixels": "ask"}) == info.value.problem + "; ask"  # a page's own words


def test_resampling_to_70_micrometres(tmp_path):
    image = np.zeros((700, 350), np.float32)
    image[300:400, 100:200] = 1
    out = resample_to_spacing(image, (0.1, 0.1))
    assert out.shape == (1000, 500)
    assert out.sum() * 0.07 ** 2 == pytest.approx(image.sum() * 0.1 ** 2, rel=0.01)  # area in mm² preserved


def test_load_for_scan_spacing_rules(tmp_path, gradient):
    Image.fromarray(gradient).save(tmp_path / "a.png")
    assumed = load_for_scan(tmp_path / "a.png")
    assert assumed.spacing_assumed and assumed.image.shape == gradient.shape
    given = load_for_scan(tmp_path / "a.png", pixel_spacing_mm=0.14)
    assert not given.spacing_assumed and given.image.shape == (80, 512)
    write_dicom(tmp_path / "a.dcm", gradient, bits_stored=8, pixel_spacing_mm=0.035)
    from_file = load_for_scan(tmp_path / "a.dcm")
    assert not from_file.spacing_assumed and from_file.image.shape == (20, 128)
    with pytest.raises(MammogramError, match="positive"):
        load_for_scan(tmp_path / "a.png", pixel_spacing_mm=-1)

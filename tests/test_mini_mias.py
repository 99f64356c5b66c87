import numpy as np
import pytest
from PIL import Image

from mccscan.datasets.mini_mias import read_mini_mias

INFO = """MIAS database reference list (header lines are ignored)
mdb001 G CIRC B 535 425 197
mdb002 G NORM
mdb209 G CALC M 100 150 20
mdb210 G NORM
mdb223 D CALC B 50 60 10
mdb223 D CALC B 200 210 6
mdb233 G CALC M * NOTE 3
mdb240 D CALC B 10 10 0
mdb250 F NORM
"""


@pytest.fixture
def mias_root(tmp_path):
    (tmp_path / "Info.txt").write_text(INFO)
    for ref in ("mdb001", "mdb002", "mdb209", "mdb210", "mdb223", "mdb233", "mdb240"):
        Image.fromarray(np.full((256, 256), 40, np.uint8)).save(tmp_path / f"{ref}.pgm")
    return tmp_path


def test_calc_rows_become_circles_with_y_from_the_bottom(mias_root):
    index = read_mini_mias(mias_root)
    records = {r.image_id: r for r in index.records}
    calc = records["mdb209"]
    assert calc.pixel_spacing_mm == 0.2 and calc.view == "MLO" and calc.patient_id == "mias105"
    outline = np.array(calc.clusters[0].outline)
    assert np.allclose(outline.mean(0), (100, 256 - 150), atol=1e-6)
    assert np.isclose(np.hypot(*(outline - outline.mean(0)).T).max(), 20)
    assert len(records["mdb223"].clusters) == 2
    assert not records["mdb001"].annotated  # a mass is no MC label


def test_patients_are_consecutive_pairs(mias_root):
    records = {r.image_id: r for r in read_mini_mias(mias_root).records}
    assert records["mdb001"].patient_id == records["mdb002"].patient_id
    assert records["mdb209"].patient_id == records["mdb210"].patient_id != records["mdb002"].patient_id


def test_unlocated_calc_is_image_level_and_bad_rows_and_files_are_reported(mias_root):
    (mias_root / "mdb210.pgm").write_bytes(b"P5\n256 256\n255\n" + b"\0" * 10)  # truncated, still opens lazily
    index = read_mini_mias(mias_root)
    records = {r.image_id: r for r in index.records}
    assert records["mdb233"].unlocated_findings and not records["mdb233"].clusters
    skipped = {s.path.split("/")[-1]: s.reason for s in index.skipped}
    assert "radius" in skipped["Info.txt:mdb240"]
    assert "missing" in skipped["mdb250.pgm"]


def test_builder_skips_image_level_findings_and_unreadable_images(mias_root, tmp_path):
    from mccscan.builder import build_dataset

    (mias_root / "mdb002.pgm").write_bytes(b"P5\n256 256\n255\n" + b"\0" * 10)
    card = build_dataset(read_mini_mias(mias_root), tmp_path / "out", augment=False)
    reasons = {s["path"].split("/")[-1]: s["reason"] for s in card["images_skipped"]}
    assert "image-level" in reasons["mdb233.pgm"]
    assert "truncated" in reasons["mdb002.pgm"]

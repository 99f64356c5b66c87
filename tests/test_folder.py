import numpy as np
import pytest
from PIL import Image

from mccscan.datasets.folder import read_folder

CSV = """image,type,x,y,width,height,radius,patient_id,pixel_spacing_mm
a.png,mc,10,20,,,,pat1,0.1
a.png,mc,30,40,,,2,,
a.png,cluster,5,5,50,60,,,
b/c.png,cluster,100,100,,,25,pat1,
d.png,mc,abc,1,,,,,
missing.png,mc,1,1,,,,,
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("a.png", "b/c.png", "d.png", "normal.png"):
        Image.fromarray(np.zeros((200, 200), np.uint8)).save(tmp_path / name)
    (tmp_path / "annotations.csv").write_text(CSV)
    return tmp_path


def test_points_boxes_circles_and_normals(folder):
    index = read_folder(folder)
    records = {r.image_id: r for r in index.records}
    assert set(records) == {"a.png", "b/c.png", "normal.png"}
    a = records["a.png"]
    assert [(m.x, m.y, m.radius_px) for m in a.mcs] == [(10, 20, 0), (30, 40, 2)]
    assert a.clusters[0].outline == [(5, 5), (55, 5), (55, 65), (5, 65)]
    assert a.patient_id == "pat1" and a.pixel_spacing_mm == 0.1
    assert records["b/c.png"].patient_id == "pat1" and len(records["b/c.png"].clusters[0].outline) == 48
    assert records["normal.png"].patient_id == "normal" and not records["normal.png"].annotated


def test_bad_rows_skip_their_image_and_name_the_line(folder):
    skipped = {s.path: s.reason for s in read_folder(folder).skipped}
    assert "d.png" in skipped["annotations.csv:6"] and "annotations.csv:7" in skipped
    assert "not found" in skipped["annotations.csv:7"]


def test_header_is_checked(folder):
    (folder / "annotations.csv").write_text("file,x,y\na.png,1,2\n")
    with pytest.raises(ValueError, match="'image' and 'type'"):
        read_folder(folder)

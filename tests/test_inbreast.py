import numpy as np
import pytest

from mccscan.datasets.inbreast import parse_roi_xml, read_inbreast, write_roi_xml
from mccscan.datasets.base import MC, ClusterRegion
from mccscan.io import write_dicom

# an INbreast XML as OsiriX writes it (keys in its own order, extra keys, a Mass ROI)
XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Images</key>
	<array>
		<dict>
			<key>ImageHeight</key>
			<integer>300</integer>
			<key>ImageIndex</key>
			<integer>0</integer>
			<key>NumberOfROIs</key>
			<integer>5</integer>
			<key>ROIs</key>
			<array>
				<dict>
					<key>Area</key>
					<real>0.0</real>
					<key>Center</key>
					<string>(100.000000, 120.000000, 0.000000)</string>
					<key>IndexInImage</key>
					<integer>0</integer>
					<key>Name</key>
					<string>Calcification</string>
					<key>NumberOfPoints</key>
					<integer>1</integer>
					<key>Point_mm</key>
					<array>
						<string>(7.000000, 8.400000, 0.000000)</string>
					</array>
					<key>Point_px</key>
					<array>
						<string>(100.000000, 120.000000)</string>
					</array>
					<key>Type</key>
					<integer>19</integer>
				</dict>
				<dict>
					<key>Type</key>
					<integer>15</integer>
					<key>Point_px</key>
					<array>
						<string>(150.0, 100.0)</string>
						<string>(154.0, 100.0)</string>
						<string>(154.0, 104.0)</string>
						<string>(150.0, 104.0)</string>
					</array>
					<key>NumberOfPoints</key>
					<integer>4</integer>
					<key>Name</key>
					<string>Calcification</string>
				</dict>
				<dict>
					<key>Name</key>
					<string>Cluster</string>
					<key>NumberOfPoints</key>
					<integer>3</integer>
					<key>Point_px</key>
					<array>
						<string>(90.0, 90.0)</string>
						<string>(170.0, 90.0)</string>
						<string>(130.0, 150.0)</string>
					</array>
					<key>Type</key>
					<integer>15</integer>
				</dict>
				<dict>
					<key>Name</key>
					<string>Mass</string>
					<key>NumberOfPoints</key>
					<integer>3</integer>
					<key>Point_px</key>
					<array>
						<string>(10.0, 10.0)</string>
						<string>(20.0, 10.0)</string>
						<string>(15.0, 20.0)</string>
					</array>
					<key>Type</key>
					<integer>15</integer>
				</dict>
			</array>
		</dict>
	</array>
</dict>
</plist>
"""

CSV = """Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads
removed;removed;R;CC;201001;22678622;4;4
removed;removed;L;MLO;201001;22678694;2;1
removed;removed;L;CC;201001;22678700;2;2
"""


@pytest.fixture
def inbreast_root(tmp_path):
    (tmp_path / "AllDICOMs").mkdir()
    (tmp_path / "AllXML").mkdir()
    for name in ("22678622_61b13c59bcba149e_MG_R_CC_ANON", "22678694_61b13c59bcba149e_MG_L_ML_ANON",
                 "22678700_8dbbd4e5f3c2d0ce_MG_L_CC_ANON"):
        write_dicom(tmp_path / "AllDICOMs" / f"{name}.dcm", np.zeros((300, 200), np.uint16), pixel_spacing_mm=0.07)
    (tmp_path / "AllXML" / "22678622.xml").write_text(XML)
    (tmp_path / "AllXML" / "22678700.xml").write_text(XML[:600])  # truncated
    (tmp_path / "INbreast.csv").write_text(CSV)
    return tmp_path


def test_reader_finds_images_patients_views_and_rois(inbreast_root):
    index = read_inbreast(inbreast_root)
    records = {r.image_id: r for r in index.records}
    assert set(records) == {"22678622", "22678694"}
    annotated, normal = records["22678622"], records["22678694"]
    assert (annotated.patient_id, annotated.laterality, annotated.view) == ("61b13c59bcba149e", "R", "CC")
    assert normal.laterality == "L" and normal.view == "MLO" and not normal.annotated  # no XML: normal
    assert annotated.pixel_spacing_mm is None  # from the DICOM when read
    assert [(m.x, m.y, m.radius_px) for m in annotated.mcs][0] == (100.0, 120.0, 0.0)
    assert annotated.mcs[1].x == 152.0 and annotated.mcs[1].y == 102.0 and annotated.mcs[1].radius_px > 2
    assert len(annotated.clusters) == 1 and len(annotated.clusters[0].outline) == 3  # the Mass is ignored


def test_malformed_xml_is_reported_by_name_and_its_image_skipped(inbreast_root):
    index = read_inbreast(inbreast_root)
    assert len(index.skipped) == 1
    assert index.skipped[0].path.endswith("22678700.xml") and "malformed XML" in index.skipped[0].reason


@pytest.mark.parametrize("bad, message", [
    ("<string>(100.0, 120.0)</string>", None),
    ("<string>100.0; 120.0</string>", "bad point"),
])
def test_bad_point_strings_are_malformed(tmp_path, bad, message):
    (tmp_path / "a.xml").write_text(XML.replace("<string>(100.000000, 120.000000)</string>", bad))
    if message is None:
        assert len(parse_roi_xml(tmp_path / "a.xml")[0]) == 2
    else:
        with pytest.raises(ValueError, match=message):
            parse_roi_xml(tmp_path / "a.xml")


def test_writer_round_trips(tmp_path):
    mcs = [MC(10.5, 20.25, 0.0), MC(50.0, 60.0, 4.0)]
    clusters = [ClusterRegion.circle(40, 40, 30)]
    got_mcs, got_clusters = parse_roi_xml(write_roi_xml(tmp_path / "x.xml", mcs, clusters))
    assert [(m.x, m.y) for m in got_mcs][0] == (10.5, 20.25)
    assert abs(got_mcs[1].x - 50) < 1e-6 and abs(got_mcs[1].radius_px - 4) < 1e-6
    assert np.allclose(got_clusters[0].outline, clusters[0].outline, atol=1e-5)


def test_missing_alldicoms_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="AllDICOMs"):
        read_inbreast(tmp_path)

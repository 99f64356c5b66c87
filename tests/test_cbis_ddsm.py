import numpy as np
import pytest

from mccscan.datasets.cbis_ddsm import read_cbis_ddsm
from mccscan.io import write_dicom

HEADER = ("patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,"
          "calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,"
          "ROI mask file path\n")
UID = "1.3.6.1.4.1.9590.100.1.2.{}"


def row(patient, side, view, abn, image_path, crop_path, mask_path):
    return (f"{patient},3,{side},{view},{abn},calcification,PLEOMORPHIC,CLUSTERED,4,MALIGNANT,4,"
            f"{image_path},{crop_path},{mask_path}\n")


@pytest.fixture
def cbis_root(tmp_path):
    # P_00005: the CSV's UID folders exist as written
    img = f"Calc-Training_P_00005_RIGHT_CC/{UID.format(1)}/{UID.format(2)}/000000.dcm"
    roi = f"Calc-Training_P_00005_RIGHT_CC_1/{UID.format(3)}/{UID.format(4)}/"
    (tmp_path / img).parent.mkdir(parents=True)
    write_dicom(tmp_path / img, np.zeros((300, 200), np.uint16))
    (tmp_path / roi).mkdir(parents=True)
    mask = np.zeros((300, 200), np.uint8)
    mask[100:140, 50:90] = 255
    write_dicom(tmp_path / roi / "000000.dcm", np.zeros((40, 40), np.uint8))  # the cropped patch
    write_dicom(tmp_path / roi / "000001.dcm", mask)  # the mask, the size of the image
    # P_00007: TCIA renamed the folders: found under the path's first folder
    img2 = "Calc-Training_P_00007_LEFT_MLO/08-07-2016-DDSM-93921/1.000000-full mammogram images-83456/1-1.dcm"
    roi2 = "Calc-Training_P_00007_LEFT_MLO_1/08-07-2016-DDSM-1234/1.000000-ROI mask images-5555/"
    (tmp_path / img2).parent.mkdir(parents=True)
    write_dicom(tmp_path / img2, np.zeros((250, 180), np.uint16))
    (tmp_path / roi2).mkdir(parents=True)
    mask2 = np.zeros((250, 180), np.uint8)
    mask2[10:30, 10:30] = 255
    write_dicom(tmp_path / roi2 / "1-2.dcm", mask2)
    write_dicom(tmp_path / roi2 / "1-1.dcm", np.zeros((20, 20), np.uint8))
    csv_text = HEADER
    csv_text += row("P_00005", "RIGHT", "CC", 1, img, roi + "000000.dcm", roi + "000001.dcm")
    csv_text += row("P_00005", "RIGHT", "CC", 2, img, roi + "000000.dcm", roi + "000001.dcm")
    csv_text += row("P_00007", "LEFT", "MLO", 1, f"Calc-Training_P_00007_LEFT_MLO/{UID.format(5)}/x/000000.dcm",
                    f"Calc-Training_P_00007_LEFT_MLO_1/{UID.format(6)}/y/000000.dcm",
                    f"Calc-Training_P_00007_LEFT_MLO_1/{UID.format(6)}/y/000001.dcm")
    csv_text += row("P_00009", "LEFT", "CC", 1, "Calc-Training_P_00009_LEFT_CC/a/b/000000.dcm", "x", "y")
    (tmp_path / "calc_case_description_train_set.csv").write_text(csv_text)
    return tmp_path


def test_rows_group_into_mammograms_with_mask_regions(cbis_root):
    index = read_cbis_ddsm(cbis_root, pixel_spacing_mm=0.05)
    records = {r.image_id: r for r in index.records}
    assert set(records) == {"Calc-Training_P_00005_RIGHT_CC", "Calc-Training_P_00007_LEFT_MLO"}
    first = records["Calc-Training_P_00005_RIGHT_CC"]
    assert (first.patient_id, first.laterality, first.view, first.pixel_spacing_mm) == ("P_00005", "R", "CC", 0.05)
    assert len(first.clusters) == 2 and first.clusters[0].mask_path.name == "000001.dcm"
    renamed = records["Calc-Training_P_00007_LEFT_MLO"]
    assert renamed.clusters[0].mask_path.name == "1-2.dcm"  # the full-size one, not the crop
    assert any("0.05 mm given by the user" in n for n in index.notes)


def test_missing_image_is_reported_not_silent(cbis_root):
    index = read_cbis_ddsm(cbis_root, pixel_spacing_mm=0.05)
    assert len(index.skipped) == 1
    assert "P_00009" in index.skipped[0].reason and "train_set.csv:5" in index.skipped[0].path


def test_spacing_is_required_and_bad_csvs_are_clear(cbis_root, tmp_path_factory):
    with pytest.raises(ValueError, match="--pixel-spacing"):
        read_cbis_ddsm(cbis_root, None)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match="calc_case_description"):
        read_cbis_ddsm(empty, 0.05)
    (empty / "calc_case_description_test_set.csv").write_text("patient_id,image view\nP_1,CC\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_cbis_ddsm(empty, 0.05)


def test_mask_becomes_a_cluster_region_at_70_um(cbis_root):
    from mccscan.patches import annotate

    record = next(r for r in read_cbis_ddsm(cbis_root, 0.05).records if r.patient_id == "P_00005")
    ann = annotate(record)
    assert ann.image.shape == (round(300 * 0.05 / 0.07), round(200 * 0.05 / 0.07))
    (x0, y0), crop = ann.clusters[0]
    assert abs(x0 - 50 * 0.05 / 0.07) <= 1 and abs(crop.shape[0] - 40 * 0.05 / 0.07) <= 2

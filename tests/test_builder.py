import csv
import hashlib
import json

import numpy as np
import pytest

from mccscan.builder import build_dataset
from mccscan.cli import main
from mccscan.datasets import read_source
from mccscan.datasets.phantom import write_inbreast
from mccscan.patches import AUGMENTATIONS, LabelRule


@pytest.fixture(scope="module")
def phantom_inbreast(tmp_path_factory):
    root = tmp_path_factory.mktemp("inbreast")
    write_inbreast(root, range(6), size=(1000, 900), n_clusters=2)
    return root


def manifest(out_dir):
    with open(out_dir / "manifest.csv") as fh:
        return list(csv.DictReader(fh))


def digest(out_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out_dir.iterdir())}


@pytest.fixture(scope="module")
def built(phantom_inbreast, tmp_path_factory):
    out = tmp_path_factory.mktemp("built")
    card = build_dataset(read_source("phantom", phantom_inbreast), out, seed=3)
    return out, card


def test_patient_protocol_keeps_each_patient_in_one_split(built):
    out, card = built
    rows = manifest(out)
    splits_of = {}
    for r in rows:
        splits_of.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values()) and card["patients_in_several_splits"] == 0
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_labels_follow_the_rule_against_the_ground_truth(built, phantom_inbreast):
    """Recount each patch's MCs from the XML annotations, independently of the builder."""
    from mccscan.datasets.inbreast import parse_roi_xml

    out, card = built
    rule = LabelRule(**card["label_rule"])
    for r in manifest(out):
        if r["augmentation"] != "identity":
            continue
        mcs, _ = parse_roi_xml(phantom_inbreast / "AllXML" / f"{r['image_id']}.xml")
        x, y = int(r["x"]), int(r["y"])
        inside = sum(x <= m.x < x + 144 and y <= m.y < y + 144 for m in mcs)  # phantoms are at 70 µm
        assert inside == int(r["n_mcs"])
        if r["label"] == "1":
            assert inside >= rule.min_mcs or float(r["cluster_overlap"]) >= rule.min_cluster_overlap
        else:
            assert inside == 0 and float(r["cluster_overlap"]) == 0


def test_classes_are_balanced_and_augmented_inside_each_split(built):
    out, card = built
    patches = np.load(out / "patches.npy", mmap_mode="r")
    rows = manifest(out)
    assert len(patches) == len(rows) and patches.dtype == np.uint8 and patches.shape[1:] == (144, 144)
    for split, counts in card["counts"].items():
        assert counts["mcc"] == counts["normal"] == sum(r["split"] == split and r["label"] == "1" for r in rows)
    first = rows[:5]
    assert [r["augmentation"] for r in first] == list(AUGMENTATIONS)
    assert len({(r["x"], r["y"], r["split"]) for r in first}) == 1
    np.testing.assert_array_equal(patches[4], np.rot90(patches[0]))


def test_same_inputs_and_seed_give_identical_files(built, phantom_inbreast, tmp_path):
    out, _ = built
    build_dataset(read_source("phantom", phantom_inbreast), tmp_path / "again", seed=3)
    assert digest(tmp_path / "again") == digest(out)


def test_paper_protocol_says_so_and_counts_shared_patients(phantom_inbreast, tmp_path):
    card = build_dataset(read_source("phantom", phantom_inbreast), tmp_path, protocol="paper", augment=False)
    assert card["protocol"] == "paper" and "patients can appear in several splits" in card["protocol_note"]
    rows = manifest(tmp_path)
    per_split = {s: {r["patient_id"] for r in rows if r["split"] == s} for s in ("train", "val", "test")}
    shared = (per_split["train"] & per_split["val"]) | (per_split["train"] & per_split["test"]) | (
        per_split["val"] & per_split["test"])
    assert card["patients_in_several_splits"] == len(shared)
    assert {r["augmentation"] for r in rows} == {"identity"}


def test_cli_builds_a_phantom_dataset_and_marks_it_synthetic(tmp_path, capsys):
    code = main(["build-dataset", "--source", "phantom", "--root", str(tmp_path / "src"), "--out",
                 str(tmp_path / "out"), "--images", "3", "--no-augment"])
    assert code == 0
    out = capsys.readouterr().out
    assert "train" in out and "not patient data" in out
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert card["synthetic"] and card["source"] == "phantom" and card["images_used"] == 3
    assert (tmp_path / "out" / "contact_sheet.png").stat().st_size > 1000


def test_insert_synthetic_gives_exact_positives_on_unannotated_tissue(tmp_path):
    from PIL import Image

    from mccscan.datasets.phantom import make_phantom

    originals = {}
    for seed in (1, 2, 3):  # "real" normal mammograms: no clusters, no annotation file
        ph = make_phantom(seed, size=(1000, 900), n_clusters=0)
        Image.fromarray(ph.to_uint8()).save(tmp_path / f"n{seed}.png")
        originals[f"n{seed}.png"] = ph.to_uint8()
    index = read_source("folder", tmp_path)
    plain = build_dataset(index, tmp_path / "plain", augment=False)
    assert sum(c["mcc"] for c in plain["counts"].values()) == 0
    card = build_dataset(index, tmp_path / "out", augment=False, insert_synthetic=2, seed=5)
    assert card["synthetic_clusters_inserted"]["images"] == 3
    rows = manifest(tmp_path / "out")
    patches = np.load(tmp_path / "out" / "patches.npy")
    positives = [r for r in rows if r["label"] == "1"]
    assert positives and all(r["synthetic_clusters"] == "1" for r in rows)
    for r in positives:
        x, y = int(r["x"]), int(r["y"])
        before = originals[r["image_id"]][y:y + 144, x:x + 144].astype(int)
        added = patches[int(r["patch_id"])].astype(int) - before
        assert int(r["n_mcs"]) >= 3 or float(r["cluster_overlap"]) >= 0.5
        assert added.max() >= 10 and added.min() >= -1  # bright MCs added, tissue otherwise untouched
    again = build_dataset(index, tmp_path / "again", augment=False, insert_synthetic=2, seed=5)
    assert digest(tmp_path / "again") == digest(tmp_path / "out") and again == card

import json

from mccscan.train_detector import DetectorTrainConfig, train_detector
from mccscan.weights import load_model


def test_train_detector_writes_weights_and_an_operating_point(tmp_path):
    config = DetectorTrainConfig(train_phantoms=2, val_phantoms=1, epochs=1, negatives_per_image=200)
    card = train_detector(tmp_path, config, progress=False, command="mccscan train-detector --test")
    from mccscan.metrics import ABOVE_ANY_SCORE

    threshold = card["operating_point"]["cluster_threshold"]  # a 1-epoch net may keep to the budget only by silence
    assert card["detector"] == "mc" and (0 <= threshold <= 1 or threshold == ABOVE_ANY_SCORE)
    loaded = load_model(tmp_path / "mc.pt")
    assert type(loaded.model).__name__ == "MCNet" and loaded.sha256 == card["sha256"]
    saved = json.loads((tmp_path / "mc.json").read_text())
    assert saved["data"]["train_mcs"] > 0 and len(saved["history"]) == 1

import json

from mccscan.train_detector import DetectorTrainConfig, train_detector
from mccscan.weights import load_model


def test_train_detector_writes_weights_and_an_operating_point(tmp_path):
    config = DetectorTrainConfig(train_phantoms=2, val_phantoms=1, epochs=1, negatives_per_image=200,
                                 operating_point_spacings_mm=(0.07,))
    card = train_detector(tmp_path, config, progress=False, command="mccscan train-detector --test")
    from mccscan.metrics import ABOVE_ANY_SCORE

    threshold = card["operating_point"]["cluster_threshold"]  # a 1-epoch net may keep to the budget only by silence
    assert card["detector"] == "mc" and (0 <= threshold <= 1 or threshold == ABOVE_ANY_SCORE)
    loaded = load_model(tmp_path / "mc.pt")
    assert type(loaded.model).__name__ == "MCNet" and loaded.sha256 == card["sha256"]
    saved = json.loads((tmp_path / "mc.json").read_text())
    assert saved["data"]["train_mcs"] > 0 and len(saved["history"]) == 1


def test_train_detector_inserts_clusters_into_given_mammograms(tmp_path, capsys):
    from mccscan.cli import main
    from mccscan.datasets.phantom import make_phantom

    tissue = tmp_path / "tissue"
    make_phantom(7, size=(1400, 1100), n_clusters=0).write(tissue, stem="normal", formats=("dcm",))
    out = tmp_path / "run"
    assert main(["train-detector", "--out", str(out), "--train-phantoms", "1", "--val-phantoms", "1", "--epochs", "1",
                 "--negatives", "100", "--tissue", str(tissue), "--tissue-draws", "2",
                 "--operating-point-spacings", "0.07"]) == 0
    printed = capsys.readouterr().out
    tissue_line = next(line for line in printed.splitlines() if "from 1 real mammograms" in line)
    assert int(tissue_line.split("(")[1].split()[0]) > 0  # inserted MCs found as candidates
    card = json.loads((out / "mc.json").read_text())
    assert card["data"]["tissue"] == ["normal.dcm"] and "1 real mammograms" in card["trained_on"]
    assert card["train_config"]["tissue_draws"] == 2 and card["train_config"]["acquisition"] is True
    assert main(["train-detector", "--out", str(out), "--tissue", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    assert main(["train-detector", "--out", str(out), "--tissue", str(tissue), "--tissue-draws", "0"]) == 2
    assert "1 draw per mammogram" in capsys.readouterr().err
    assert main(["train-detector", "--out", str(out), "--tissue-isolated", "2"]) == 2
    assert "for isolated sites, --tissue" in capsys.readouterr().err
    import pydicom

    ds = pydicom.dcmread(tissue / "normal.dcm")
    ds.PixelSpacing = ds.ImagerPixelSpacing = ["1e-6", "1e-6"]
    ds.save_as(tissue / "normal.dcm")
    assert main(["train-detector", "--out", str(out), "--train-phantoms", "1", "--tissue", str(tissue)]) == 2
    assert "normal.dcm" in (err := capsys.readouterr().err) and "with --tissue-spacing" in err
    assert "--pixel-spacing" not in err  # not an option of train-detector


def test_the_candidate_stage_it_was_trained_on_is_the_one_its_scans_use(tmp_path):
    from mccscan.cli import main
    from mccscan.scan import detector_options

    out = tmp_path / "run"
    assert main(["train-detector", "--out", str(out), "--train-phantoms", "1", "--val-phantoms", "1", "--epochs", "1",
                 "--negatives", "100", "--wide-sigma", "3", "--candidate-snr", "3", "--channels", "8", "8", "16",
                 "16", "--cosine-lr", "--operating-point-spacings", "0.07", "0.14", "--mc-floor", "0.7",
                 "--context-pool", "3", "--position-aware"]) == 0
    loaded = load_model(out / "mc.pt")
    assert loaded.model.config.context_pool == 3 and loaded.card["train_config"]["context_pool"] == 3
    assert loaded.model.config.position_aware and loaded.card["train_config"]["position_aware"] is True
    validation = loaded.card["operating_point"]["validation"]
    assert validation["pixel_spacings_mm"] == [0.07, 0.14] and validation["images"] == 2  # 1 phantom at each
    assert loaded.model.config.channels == (8, 8, 16, 16)
    assert detector_options(loaded) == {"mc_floor": 0.7, "candidate_snr": 3.0, "wide_sigma_px": 3.0, "coarse_mm": 1.0}
    assert loaded.card["operating_point"]["coarse_mm"] == 1.0  # the rule its operating point was chosen with
    assert loaded.card["train_config"]["cosine_lr"] is True
    card = json.loads((out / "mc.json").read_text())  # shaped like the shipped card: its train_config names neither
    for key in ("mc_floor", "operating_point_spacings_mm"):
        del card["train_config"][key]
    (out / "mc.json").write_text(json.dumps(card))
    recalibrate = ["train-detector", "--out", str(out), "--recalibrate", "--val-phantoms", "1"]
    assert main(recalibrate) == 0  # keeps the card's floor and pixel sizes …
    loaded = load_model(out / "mc.pt")
    assert detector_options(loaded)["mc_floor"] == 0.7
    assert loaded.card["operating_point"]["validation"]["pixel_spacings_mm"] == [0.07, 0.14]
    assert main(recalibrate + ["--mc-floor", "0.6", "--operating-point-spacings", "0.07"]) == 0  # … unless told
    loaded = load_model(out / "mc.pt")
    assert detector_options(loaded)["mc_floor"] == 0.6 and loaded.card["operating_point"]["validation"]["images"] == 1


def test_a_candidate_stage_it_cannot_run_is_refused_before_training(tmp_path, capsys):
    from mccscan.cli import main

    assert main(["train-detector", "--out", str(tmp_path / "run"), "--wide-sigma", "1"]) == 2
    assert "--wide-sigma ≥ 1.5 px (got 1.0)" in capsys.readouterr().err
    assert main(["train-detector", "--out", str(tmp_path / "run"), "--operating-point-spacings", "0.07", "0"]) == 2
    assert "positive pixel spacings (mm), not [0.07, 0.0]" in capsys.readouterr().err
    assert main(["train-detector", "--out", str(tmp_path / "run"), "--mc-floor", "1"]) == 2
    assert "MC floor is a probability strictly between 0 and 1, not 1.0" in capsys.readouterr().err
    assert main(["train-detector", "--out", str(tmp_path / "run"), "--lookalike-repeats", "0"]) == 2
    assert "1 lookalike repeat" in capsys.readouterr().err
    assert main(["train-detector", "--out", str(tmp_path / "run"), "--context-pool", "2"]) == 2
    assert "odd pooling factor, not 2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_killed_run_resumes_and_ends_with_the_same_weights(tmp_path, monkeypatch, capsys):
    import pytest
    import torch

    import mccscan.train_detector as td

    config = DetectorTrainConfig(train_phantoms=1, val_phantoms=1, epochs=2, negatives_per_image=100, cosine_lr=True,
                                 operating_point_spacings_mm=(0.07,))
    td.train_detector(tmp_path / "whole", config, progress=False)
    save = td.save_checkpoint

    def killed_after_epoch_1(path, state):
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(td, "save_checkpoint", killed_after_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        td.train_detector(tmp_path / "killed", config, progress=False)
    monkeypatch.setattr(td, "save_checkpoint", save)
    td.train_detector(tmp_path / "killed", config, progress=False)
    assert "resuming from" in capsys.readouterr().out
    whole, resumed = (load_model(tmp_path / run / "mc.pt") for run in ("whole", "killed"))
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key])
    assert whole.card["history"] == resumed.card["history"] and len(resumed.card["history"]) == 2
    assert whole.card["operating_point"] == resumed.card["operating_point"]
    td.train_detector(tmp_path / "killed", DetectorTrainConfig(**{**config.__dict__, "seed": 1}), progress=False)
    assert "belongs to a different configuration" in capsys.readouterr().out

    def no_data(*args):
        raise AssertionError("drew its data again")

    monkeypatch.setattr(td, "phantom_samples", no_data)  # a finished run, rerun as it was, does nothing
    assert td.train_detector(tmp_path / "whole", config, progress=False) == whole.card
    assert "nothing to do" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="drew its data"):  # another MC floor: its operating point is chosen again
        td.train_detector(tmp_path / "whole", DetectorTrainConfig(**{**config.__dict__, "mc_floor": 0.7}),
                          progress=False)
    assert td.finished_card(tmp_path / "whole", config) is not None
    monkeypatch.setattr(td, "COARSE_MM", 2.0)  # chosen under another coarse rule: chosen again …
    assert td.finished_card(tmp_path / "whole", config) is None
    td.choose_operating_point(tmp_path / "whole" / "mc.pt", config.val_phantoms, config.operating_point_spacings_mm,
                              mc_floor=config.mc_floor)
    assert td.finished_card(tmp_path / "whole", config)["operating_point"]["coarse_mm"] == 2.0  # … with today's


def test_candidates_on_benign_lookalikes_become_repeated_negatives():
    import numpy as np

    from mccscan.datasets.phantom import Lookalike, make_phantom
    from mccscan.train_detector import candidate_samples

    ph = make_phantom(4, size="small")
    lookalikes = [*ph.lookalikes, Lookalike(ph.mcs[0].x, ph.mcs[0].y, 5.0, "coarse")]  # one on an MC: it stays an MC
    config = DetectorTrainConfig(acquisition=False, negatives_per_image=100)
    base_x, base_y = candidate_samples(ph.image, ph.breast_mask, ph.mcs, config, np.random.default_rng(0))
    hard_x, hard_y = candidate_samples(ph.image, ph.breast_mask, ph.mcs, config, np.random.default_rng(0),
                                       lookalikes, 3)
    assert hard_y.sum() == base_y.sum() and len(hard_y) > len(base_y)  # the same MCs; more negatives
    _, base_counts = np.unique(base_x.reshape(len(base_x), -1), axis=0, return_counts=True)
    patches, counts = np.unique(hard_x.reshape(len(hard_x), -1), axis=0, return_counts=True)
    assert base_counts.max() == 1 and set(counts) == {1, 3}  # each lookalike candidate 3 times, nothing else repeated
    repeated = {p.tobytes() for p in patches[counts == 3]}
    assert not any(x.tobytes() in repeated for x, y in zip(hard_x.reshape(len(hard_x), -1), hard_y) if y == 1)


def test_lone_mcs_go_into_the_films_12_mm_from_the_clusters_as_mcs_and_as_places_of_hard_negatives(monkeypatch):
    import numpy as np

    from mccscan import train_detector
    from mccscan.datasets.phantom import make_phantom

    ph = make_phantom(7, size=(1400, 1100), n_clusters=0)
    monkeypatch.setattr(train_detector, "load_for_scan", lambda path, pixel_spacing_mm: ph)
    inserted, sampled = [], []
    insert, sample = train_detector.insert_clusters, train_detector.candidate_samples
    monkeypatch.setattr(train_detector, "insert_clusters", lambda *args: inserted.append(insert(*args)) or inserted[-1])
    monkeypatch.setattr(train_detector, "candidate_samples", lambda *args: sampled.append(args) or sample(*args))
    config = DetectorTrainConfig(acquisition=False, negatives_per_image=100, tissue_draws=2, tissue_isolated=4,
                                 isolated_repeats=5)
    x, y = train_detector.tissue_samples(["film.dcm"], config, np.random.default_rng(0), progress=False)
    assert len(sampled) == len(inserted) == 2 and len(y) == len(x) and y.sum() > 0
    for (_, _, clusters), (_, _, mcs, _, _, lone, repeats) in zip(inserted, sampled):
        assert lone and repeats == 5 and all(m.cluster_id is None for m in lone) and mcs[-len(lone):] == lone
        apart = min(np.hypot(m.x - c.x, m.y - c.y) for m in lone for c in clusters)
        assert clusters and apart > 12 / 0.07 - 60  # a pair's second MC is ≤ 60 px from its site


def test_phantom_lookalikes_are_places_of_hard_negatives_only_when_repeated(monkeypatch):
    import numpy as np

    from mccscan import train_detector

    sampled = []
    monkeypatch.setattr(train_detector, "candidate_samples", lambda *args: sampled.append(args[5:]) or
                        (np.zeros((0, 1, 27, 27), np.float32), np.zeros(0, np.uint8)))
    for repeats in (1, 3):
        train_detector.phantom_samples([200_000], DetectorTrainConfig(lookalike_repeats=repeats),
                                       np.random.default_rng(0), progress=False)
    assert sampled[0] == ((), 1) and len(sampled[1][0]) > 0 and sampled[1][1] == 3

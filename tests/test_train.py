import numpy as np
import pytest
import torch

from mccscan.dataset_dir import PatchDataset
from mccscan.patches import AUGMENTATIONS, annotated_truth, labelled_patches
from mccscan.train import TrainConfig, augmented_batch, train
from mccscan.weights import load_model


@pytest.fixture(scope="module")
def tiny_sets(small_phantom):
    ph = small_phantom
    patches, labels = labelled_patches(annotated_truth(ph.image, ph.breast_mask, ph.mcs, ph.clusters),
                                       np.random.default_rng(0))
    return patches[::2], labels[::2], patches[1::2], labels[1::2]


def test_augmented_batch_maps_sample_index_to_patch_and_transform(tiny_sets):
    patches = tiny_sets[0]
    index = np.array([0, 1, 2, 3, 4, 5 * 3 + 4])
    batch = augmented_batch(patches, index, augment=True)
    expected = [f(patches[0]) for f in AUGMENTATIONS.values()] + [AUGMENTATIONS["rot90"](patches[3])]
    for got, want in zip(batch[:, 0], expected):
        np.testing.assert_allclose(got.numpy(), want / 255.0)


def state(path):
    return torch.load(path, weights_only=False)["model"]


def test_training_is_deterministic_and_resumable(tmp_path, tiny_sets):
    config = TrainConfig(epochs=2, batch_size=16, seed=3)
    model, card = train(*tiny_sets, config, tmp_path / "a", progress=False)
    train(*tiny_sets, config, tmp_path / "b", progress=False)
    # interrupted after one epoch, then resumed to two
    train(*tiny_sets, TrainConfig(epochs=1, batch_size=16, seed=3), tmp_path / "c", progress=False)
    train(*tiny_sets, config, tmp_path / "c", progress=False)
    a, b, c = (state(tmp_path / x / "last.pt") for x in "abc")
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    other = state(tmp_path / "a" / "last.pt")
    train(*tiny_sets, TrainConfig(epochs=1, batch_size=16, seed=4), tmp_path / "d", progress=False)
    assert not torch.equal(state(tmp_path / "d" / "last.pt")["convs.0.weight"], other["convs.0.weight"])
    lines = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,train_loss")
    assert card["epoch"] in (1, 2) and load_model(tmp_path / "a" / "best.pt").sha256 == card["sha256"]


def test_training_learns(tmp_path, tiny_sets):
    """A few epochs on clean patches lower the training loss (the loop really optimises)."""
    config = TrainConfig(epochs=3, batch_size=16, seed=0)
    train(*tiny_sets, config, tmp_path, progress=False)
    losses = [float(line.split(",")[1]) for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0]


def test_bf16_autocast_trains_and_writes_the_curves(tmp_path, tiny_sets):
    config = TrainConfig(epochs=2, batch_size=16, seed=0, bf16=True)
    model, card = train(*tiny_sets, config, tmp_path)
    assert card["train_config"]["bf16"] is True
    assert (tmp_path / "training_curves.png").stat().st_size > 5000
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_train_on_a_built_dataset(tmp_path, built_dataset):
    from mccscan.train import train_on_dataset

    patches, labels = PatchDataset(built_dataset).load_split("train")
    assert patches.shape[1:] == (144, 144) and labels.sum() * 2 == len(labels)
    card = train_on_dataset(built_dataset, tmp_path / "run", TrainConfig(epochs=1, batch_size=32))
    assert card["data"]["protocol"] == "patient" and "not patient data" in card["trained_on"]
    assert 0 <= card["test"]["accuracy"] <= 1 and card["train_config"]["augment"] is False


def test_early_stopping_ends_after_patience_epochs_without_improvement(tmp_path, tiny_sets, capsys):
    config = TrainConfig(epochs=10, batch_size=16, seed=0, learning_rate=0.0, patience=2)  # lr 0: never improves
    train(*tiny_sets, config, tmp_path, progress=False)
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 1 + 3  # best at epoch 1, then 2 more
    assert "early stop" in capsys.readouterr().out


def test_baselines_train_through_the_same_loop(tmp_path, tiny_sets):
    model, card = train(*tiny_sets, TrainConfig(arch="lenet5", epochs=1, batch_size=16), tmp_path, progress=False)
    assert card["arch"] == "lenet5" and type(load_model(tmp_path / "best.pt").model).__name__ == "LeNet5"


def test_a_corrupt_checkpoint_is_a_clear_error_naming_the_file(tmp_path, tiny_sets):
    from mccscan.errors import MccscanError

    config = TrainConfig(epochs=1, batch_size=16, seed=0)
    train(*tiny_sets, config, tmp_path, progress=False)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])  # what a crash mid-write used to leave
    with pytest.raises(MccscanError, match="last.pt.*delete it"):
        train(*tiny_sets, TrainConfig(epochs=2, batch_size=16, seed=0), tmp_path, progress=False)

"""The shipped demo weights: integrity and accuracy on phantoms never seen in training."""

import numpy as np

from mccscan.evaluate import binary_metrics, predict_patches
from mccscan.models import DEMO_WEIGHTS, file_sha256, load_model
from mccscan.patches import balanced_indices, build_phantom_patch_set

UNSEEN_SEEDS = range(90_000, 90_006)


def test_shipped_weights_match_their_model_card():
    loaded = load_model()
    assert loaded.sha256 == file_sha256(DEMO_WEIGHTS) == loaded.card["sha256"]
    assert "phantom" in loaded.card["trained_on"] and loaded.model.num_parameters() == 8301
    assert loaded.card["command"].startswith("mccscan ") and loaded.card["dataset_command"].startswith("mccscan ")


def test_shipped_weights_classify_unseen_phantom_patches():
    card = load_model().card
    first, last = card["phantom_seeds"]  # the test seeds were never used for training
    assert not set(UNSEEN_SEEDS) & set(range(first, last + 1))
    patches = build_phantom_patch_set(UNSEEN_SEEDS, rng_seed=1)
    keep = balanced_indices(patches.labels, np.random.default_rng(1))
    prob = predict_patches(load_model().model, patches.patches[keep])
    metrics = binary_metrics(patches.labels[keep], prob)
    assert metrics["n"] >= 300
    assert metrics["accuracy"] >= 0.95, metrics

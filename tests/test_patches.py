import numpy as np

from mccscan.patches import (AUGMENTATIONS, LabelRule, annotated_truth, augment_x5, balanced_indices,
                             labelled_patches, labelled_windows)


def test_augment_x5_is_the_papers_five_geometric_versions():
    p = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    out = augment_x5(p)
    assert out.shape == (2, 5, 4, 4) and len(AUGMENTATIONS) == 5
    np.testing.assert_array_equal(out[:, 0], p)
    np.testing.assert_array_equal(out[1, 1], np.fliplr(p[1]))
    np.testing.assert_array_equal(out[1, 2], np.rot90(p[1], 2))
    np.testing.assert_array_equal(out[1, 3], np.flipud(p[1]))  # mirror then 180° = vertical flip
    np.testing.assert_array_equal(out[1, 4], np.rot90(p[1], 1))
    assert len({out[1, k].tobytes() for k in range(5)}) == 5


def test_phantom_windows_follow_the_label_rule(small_phantom, rng):
    """The one label rule on a phantom's exact truth: MCC windows hold ≥ 3 MCs or half a
    cluster, normal windows hold no MC and touch no cluster, the rest is left out."""
    ph = small_phantom
    ann = annotated_truth(ph.image, ph.breast_mask, ph.mcs, ph.clusters)
    windows = labelled_windows(ann, LabelRule(), rng)
    assert {w.label for w in windows} >= {1, 0, -1}
    all_mcs = np.array([(m.x, m.y) for m in ph.mcs])
    for w in windows:
        inside = ((all_mcs[:, 0] >= w.x) & (all_mcs[:, 0] < w.x + 144)
                  & (all_mcs[:, 1] >= w.y) & (all_mcs[:, 1] < w.y + 144)).sum()
        assert inside == w.n_mcs
        if w.label == 1:
            assert w.n_mcs >= 3 or w.cluster_overlap >= 0.5
        elif w.label == 0:
            assert w.n_mcs == 0 and w.cluster_overlap == 0
    patches, labels = labelled_patches(ann, rng)
    assert patches.dtype == np.uint8 and patches.shape[1:] == (144, 144)
    assert labels.sum() * 2 == len(labels) > 0


def test_balanced_indices(rng):
    labels = np.array([1] * 10 + [0] * 50)
    keep = balanced_indices(labels, rng)
    assert (labels[keep] == 1).sum() == (labels[keep] == 0).sum() == 10
    assert np.all(np.diff(keep) > 0)


def test_isolated_mcs_become_hard_negatives_when_asked(small_phantom, rng):
    ph = small_phantom
    ann = annotated_truth(ph.image, ph.breast_mask, ph.mcs, ph.clusters)
    default = labelled_windows(ann, LabelRule(), np.random.default_rng(1))
    hard = labelled_windows(ann, LabelRule(isolated_negative=True), np.random.default_rng(1))
    isolated = [(d, h) for d, h in zip(default, hard) if 1 <= d.n_mcs <= 2 and d.cluster_overlap == 0]
    assert isolated and all(d.label == -1 and h.label in (0, -2) for d, h in isolated)
    assert [d.label for d in default if d.n_mcs == 0] == [h.label for h in hard if h.n_mcs == 0]

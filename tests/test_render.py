import numpy as np
import pytest
from PIL import Image

from mccscan.render import NORMAL_STRENGTH, OUTLINE_COLOR, output_stems, parse_color, render_overlay, save_scan
from mccscan.scan import scan_image


def test_overlay_lightens_normal_keeps_mcc_and_background(small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model)
    mid = np.median([t.probability for t in result.tiles if t.probability is not None])
    result = result.relabel(float(mid))
    rgb = render_overlay(small_phantom.image, result, style="paper")
    original = np.round(small_phantom.image * 255)
    for label in ("normal", "mcc", "background"):
        tile = next(t for t in result.tiles if t.label == label)
        region = (slice(tile.y, tile.y + 144), slice(tile.x, tile.x + 144))
        out, orig = rgb[region].astype(float), original[region]
        if label == "normal":
            expected = (1 - NORMAL_STRENGTH) * orig + NORMAL_STRENGTH * 230  # toward NORMAL_COLOR, #e6e6e6
            np.testing.assert_allclose(out[..., 0], expected, atol=1.5)
            assert out[..., 0].std() < 0.5 * orig.std()  # the tissue fades behind the tint
        else:
            np.testing.assert_allclose(out[..., 0], orig, atol=1)


def test_mcc_tint_and_custom_colours(small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model, threshold=0.0)
    rgb = render_overlay(small_phantom.image, result, style="paper", mcc_color="#ff0000")
    tile = next(t for t in result.tiles if t.label == "mcc")
    region = rgb[tile.y:tile.y + 144, tile.x:tile.x + 144]
    assert region[..., 1].max() == 0 and region[..., 0].mean() > 0
    np.testing.assert_allclose(parse_color("white"), [1, 1, 1])


def test_save_scan_writes_all_outputs(tmp_path, small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model, name="case.dcm")
    paths = save_scan(result, small_phantom.image, tmp_path)
    assert {p.name for p in paths.values()} == {"case.overlay.png", "case.preview.png", "case.json", "case.csv",
                                               "case.clusters.csv"}
    assert Image.open(paths["overlay"]).size == (1100, 1300)
    assert max(Image.open(paths["preview"]).size) == 1024


def test_heatmap_is_transparent_where_low_or_unknown_and_redder_where_high():
    from mccscan.render import heatmap_rgba

    rgba = heatmap_rgba(np.array([[np.nan, 0.1, 0.5, 1.0]], np.float32))
    assert rgba[0, 0, 3] == rgba[0, 1, 3] == 0
    assert 0 < rgba[0, 2, 3] < rgba[0, 3, 3] and rgba[0, 3, 1] < rgba[0, 2, 1]


def test_default_overlay_outlines_reported_clusters_and_leaves_the_rest_alone(small_phantom, random_model):
    from dataclasses import replace

    from mccscan.clusters import MC, find_clusters

    strong = find_clusters([MC(300, 400, 0.95), MC(320, 410, 0.9), MC(310, 440, 0.9)])
    weak = find_clusters([MC(700, 900, 0.4), MC(720, 905, 0.4), MC(705, 930, 0.3)])
    result = replace(scan_image(small_phantom.image, random_model), clusters=strong + weak, threshold=0.5)
    assert result.findings == strong
    rgb = render_overlay(small_phantom.image, result)
    original = np.repeat(np.round(small_phantom.image * 255)[..., None], 3, axis=2)
    changed = np.abs(rgb.astype(float) - original).sum(-1) > 3
    red = np.round(parse_color(OUTLINE_COLOR) * 255)
    ring = np.round(parse_color("#ffd400") * 255)
    is_red = np.abs(rgb.astype(float) - red).sum(-1) < 30
    assert is_red[360:480, 260:360].sum() > 100  # the outline around the strong cluster
    assert is_red[417 - 150:417 - 130, 300:320].any()  # and a ring of 1 cm radius around it
    assert (np.abs(rgb[395:426, 290:331].astype(float) - ring).sum(-1) < 30).any()  # its MCs ringed
    assert not changed[850:960, 660:760].any()  # the weak one, below the threshold, is not drawn
    changed[150:600, 150:800] = False  # the strong cluster, its ring, its MCs and its label
    assert not changed.any()  # nothing else is touched


@pytest.mark.parametrize("x, y, shape", [(500, 400, (1300, 1100)), (500, 1250, (1300, 1100)), (500, 100, (1300, 1100)),
                                         (20, 30, (1300, 1100)), (1090, 150, (300, 1100)), (100, 100, (120, 4000))])
def test_a_cluster_label_lies_whole_inside_the_image(x, y, shape):
    from mccscan.render import LABEL_PX, _label_xy

    width, ring = 260.0, 160.0
    left, top = _label_xy(width, x, y, ring, shape)
    assert 0 <= left and left + width <= shape[1] and 0 <= top
    assert top + LABEL_PX <= shape[0] or top == 0  # a strip lower than the label: at its top
    if y - ring - LABEL_PX - 12 >= 0:
        assert top + LABEL_PX <= y - ring  # above the ring where it fits
    elif y + ring + 8 + LABEL_PX + 8 <= shape[0]:
        assert top >= y + ring  # else below it where that fits


def test_preview_carries_a_legend(tmp_path, small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model, name="case.png")
    paths = save_scan(result, small_phantom.image, tmp_path)
    preview = np.asarray(Image.open(paths["preview"]).convert("RGB"))
    red = np.round(parse_color(OUTLINE_COLOR) * 255)
    assert (np.abs(preview[-60:, :40].astype(float) - red).sum(-1) < 30).any()  # the legend's red swatch


def test_output_stems_are_distinct_for_colliding_names(tmp_path):
    for rel in ("a/case.dcm", "a/case.png", "b/case.png", "c/other.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).touch()
    paths = [tmp_path / r for r in ("a/case.dcm", "a/case.png", "b/case.png", "c/other.png", "c/other.png")]
    assert output_stems(paths) == ["a_case.dcm", "a_case.png", "b_case.png", "c_other.png", "c_other.png-2"]
    assert output_stems([tmp_path / "a/case.dcm", tmp_path / "c/other.png"]) == ["case", "other"]

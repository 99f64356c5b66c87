import numpy as np
from PIL import Image

from mccscan.render import OUTLINE_COLOR, output_stems, parse_color, render_overlay, save_scan
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
            assert out.mean() > orig.mean() + 50 and out[..., 0].mean() >= 0.7 * 230
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
    assert {p.name for p in paths.values()} == {"case.overlay.png", "case.preview.png", "case.json", "case.csv"}
    assert Image.open(paths["overlay"]).size == (1100, 1300)
    assert max(Image.open(paths["preview"]).size) == 1024


def test_heatmap_is_transparent_where_low_or_unknown_and_redder_where_high():
    from mccscan.render import heatmap_rgba

    rgba = heatmap_rgba(np.array([[np.nan, 0.1, 0.5, 1.0]], np.float32))
    assert rgba[0, 0, 3] == rgba[0, 1, 3] == 0
    assert 0 < rgba[0, 2, 3] < rgba[0, 3, 3] and rgba[0, 3, 1] < rgba[0, 2, 1]


def test_default_overlay_frames_mcc_tiles_and_leaves_the_image_alone(small_phantom, random_model):
    result = scan_image(small_phantom.image, random_model)
    mid = np.median([t.probability for t in result.tiles if t.probability is not None])
    result = result.relabel(float(mid))
    rgb = render_overlay(small_phantom.image, result)
    original = np.round(small_phantom.image * 255)
    red = np.round(parse_color(OUTLINE_COLOR) * 255)
    for tile in result.tiles:
        region = rgb[tile.y:tile.y + 144, tile.x:tile.x + 144].astype(float)
        if tile.label == "mcc":
            np.testing.assert_array_equal(region[0, 72], red)  # the frame
            np.testing.assert_allclose(region[72, 72], original[tile.y + 72, tile.x + 72], atol=1)  # the inside
        elif tile.y + 144 <= 1300 and tile.x + 144 <= 1100:
            np.testing.assert_allclose(region[..., 0], original[tile.y:tile.y + 144, tile.x:tile.x + 144], atol=1)


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

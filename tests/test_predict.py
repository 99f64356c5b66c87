import numpy as np
import pytest
import torch

from mccscan.models import NetConfig
from mccscan.paper import build_model
from mccscan.predict import dense_probability_map, predict_f2, predict_patches


@pytest.mark.parametrize("kernels", [9, (7, 11)])  # one size for all layers, or one per layer (Table 2)
def test_dense_map_equals_the_model_on_each_window(small_phantom, kernels):
    torch.manual_seed(0)
    model, image = build_model(NetConfig((6, 16), kernels)).eval(), small_phantom.image
    dense = dense_probability_map(model, image, stride_px=16, block_px=200)
    assert dense.shape == ((image.shape[0] - 144) // 16 + 1, (image.shape[1] - 144) // 16 + 1)
    rng = np.random.default_rng(0)
    cells = [(0, 0), (dense.shape[0] - 1, dense.shape[1] - 1)] + [
        tuple(rng.integers(0, dense.shape)) for _ in range(6)]
    patches = np.stack([image[i * 16:i * 16 + 144, j * 16:j * 16 + 144] for i, j in cells])
    with torch.inference_mode():
        expected = torch.sigmoid(model(torch.from_numpy(patches)[:, None])).numpy()
    np.testing.assert_allclose([dense[c] for c in cells], expected, atol=1e-5)


def test_dense_map_is_masked_to_the_breast(small_phantom, random_model):
    mask = small_phantom.breast_mask
    dense = dense_probability_map(random_model.model, small_phantom.image, mask=mask)
    centres = mask[72::16, 72::16][:dense.shape[0], :dense.shape[1]]
    assert np.isnan(dense[~centres]).all() and not np.isnan(dense[centres]).any()


def test_patch_predictions_and_f2_match_the_model_in_any_batch_size(small_phantom):
    torch.manual_seed(0)
    model = build_model().eval()
    patches = np.round(np.stack([small_phantom.image[i:i + 144, 300:444] for i in range(400, 1000, 60)]) * 255)
    patches = patches.astype(np.uint8)
    with torch.inference_mode():
        features = model.features(torch.from_numpy(patches).float()[:, None] / 255)
    np.testing.assert_allclose(predict_patches(model, patches, batch_size=3), torch.sigmoid(features.logit), atol=1e-6)
    np.testing.assert_allclose(predict_f2(model, patches), features.f2, atol=1e-6)
    assert predict_patches(model, patches[:0]).shape == (0,) and predict_f2(model, patches[:0]).shape == (0, 16)

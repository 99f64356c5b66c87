import numpy as np
import pytest
import torch

from mccscan.datasets.phantom import make_phantom
from mccscan.models import LoadedModel, build_model


@pytest.fixture(scope="session")
def small_phantom():
    """A 1300×1100 phantom with two clusters (fast to make and scan)."""
    return make_phantom(seed=123, size=(1300, 1100), view="CC", laterality="L", n_clusters=2)


@pytest.fixture
def random_model():
    torch.manual_seed(0)
    model = build_model("proposed").eval()
    return LoadedModel(model, "random-init", "0" * 64, {})


@pytest.fixture
def rng():
    return np.random.default_rng(0)

import numpy as np
import pytest
import torch
from components import orthanc, postgresql

from mccscan.datasets.phantom import make_phantom
from mccscan.paper import build_model
from mccscan.weights import LoadedModel


@pytest.fixture(scope="session")
def small_phantom():
    """A 1300×1100 phantom with two clusters (fast to make and scan)."""
    return make_phantom(seed=123, size=(1300, 1100), view="CC", laterality="L", n_clusters=2)


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory):
    """A small patch dataset built from 6 phantom mammograms (3 patients: one per split),
    unaugmented; its source folder stays for image-level evaluation."""
    from mccscan.builder import build_dataset
    from mccscan.datasets import read_source
    from mccscan.datasets.phantom import write_inbreast

    root = tmp_path_factory.mktemp("built_dataset")
    write_inbreast(root / "src", range(6), size=(1000, 900), n_clusters=2)
    build_dataset(read_source("phantom", root / "src"), root / "data", augment=False)
    return root / "data"


@pytest.fixture
def random_model():
    torch.manual_seed(0)
    model = build_model("proposed").eval()
    return LoadedModel(model, "random-init", "0" * 64, {})


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def pacs(tmp_path_factory):
    """A real Orthanc with DICOMweb on loopback; yields its DICOMweb root URL."""
    with orthanc(tmp_path_factory.mktemp("orthanc")) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL on loopback; yields the server URL (see components.new_database)."""
    with postgresql() as url:
        yield url

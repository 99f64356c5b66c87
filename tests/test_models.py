import pytest
import torch

from mccscan.models import MCCNet, NetConfig, flops_per_patch, parameter_count
from mccscan.paper import BASELINES, PAPER_MODEL, PAPER_TABLE3, TABLE1, build_model, config_by_name
from mccscan.weights import WeightsError, load_model, save_weights

PAPER_TABLE1_PARAMETERS = [2589, 2589, 1125, 433, 2129, 957, 5037, 12381, 8301]


def test_table1_parameter_counts_match_the_paper():
    counted = [MCCNet(row.config).num_parameters() for row in TABLE1.values()]
    assert counted == PAPER_TABLE1_PARAMETERS


def test_proposed_model_is_the_papers_8301_parameter_network():
    model = build_model("proposed")
    assert model.num_parameters() == 8301
    assert [tuple(c.weight.shape) for c in model.convs] == [(6, 1, 9, 9), (16, 6, 9, 9)]
    assert model.dropout.p == pytest.approx(0.2)
    assert build_model(PAPER_MODEL).config == model.config


def test_features_shapes_and_forward_consistency():
    model = build_model().eval()
    x = torch.rand(3, 1, 144, 144)
    feats = model.features(x)
    assert [tuple(m.shape) for m in feats.conv_maps] == [(3, 6, 136, 136), (3, 16, 128, 128)]
    assert feats.f2.shape == (3, 16)
    assert torch.equal(feats.f2, feats.conv_maps[1].amax(dim=(2, 3)))
    assert torch.allclose(model(x), feats.logit)


def test_max_pool_variant_runs_and_is_not_fully_convolutional():
    model = build_model("cl2-k5-6x16-mp2").eval()
    assert not model.fully_convolutional
    assert model(torch.rand(2, 1, 144, 144)).shape == (2,)


def test_flops_per_patch_counts_every_multiply_add():
    expected = 2 * (81 * 1 * 6 * 136 ** 2 + 81 * 6 * 16 * 128 ** 2) + 2 * 16
    assert build_model().flops_per_patch() == expected


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown architecture"):
        config_by_name("resnet")
    with pytest.raises(ValueError):
        NetConfig((6, 16), max_pool_layers=3)


def test_weights_roundtrip_and_sha_check(tmp_path):
    model = build_model("cl2-k5-4x10")
    card = save_weights(model, tmp_path / "m.pt", {"name": "tiny"})
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.sha256 == card["sha256"] and loaded.model.config == model.config
    for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()):
        assert torch.equal(a, b)
    data = bytearray((tmp_path / "m.pt").read_bytes())
    data[-30] ^= 0xFF
    (tmp_path / "m.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match its model card"):
        load_model(tmp_path / "m.pt")


def test_missing_or_corrupt_weights(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot load"):
        load_model(tmp_path / "bad.pt")


def test_per_layer_kernel_sizes():
    config = NetConfig((6, 16), (5, 9))
    model = MCCNet(config)
    assert [c.kernel_size for c in model.convs] == [(5, 5), (9, 9)]
    assert model.num_parameters() == (25 * 6 + 6) + (81 * 6 * 16 + 16) + 17
    assert config.conv_shrink_px == 12 and model(torch.rand(1, 1, 144, 144)).shape == (1,)
    assert NetConfig((6, 16), [9, 9]) == NetConfig((6, 16), 9)  # JSON lists come back equal
    with pytest.raises(ValueError, match="one per conv layer"):
        NetConfig((6, 16), (5, 7, 9))


def test_mobilenetv2_with_the_papers_head_has_the_papers_parameter_count():
    model = build_model("mobilenetv2-paper-head")
    assert parameter_count(model, with_bn_statistics=True) == PAPER_TABLE3["mobilenetv2-paper-head"][1]
    # the original head (global average pool) is the 2.2 M-parameter MobileNetV2
    assert 2.2e6 < parameter_count(build_model("mobilenetv2")) < 2.3e6


def test_lenet5_follows_the_original_layout():
    model = build_model("lenet5")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(6, 1, 5, 5), (16, 6, 5, 5)]
    dense = [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert dense == [120, 84, 1]
    paper = PAPER_TABLE3["lenet5"][1]
    assert abs(parameter_count(model) - paper) / paper < 1e-3  # the paper's Keras count differs by 904


@pytest.mark.parametrize("name", list(BASELINES))
def test_baselines_score_patches_and_round_trip_through_weights(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.rand(2, 1, 144, 144)
    assert model(x).shape == (2,)
    assert flops_per_patch(model) > 1e6
    save_weights(model, tmp_path / "b.pt", {"name": name})
    loaded = load_model(tmp_path / "b.pt")
    assert type(loaded.model) is type(model)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), model(x))


@pytest.mark.parametrize("arch", ["proposed", NetConfig((6, 16), (7, 11)), "cl6-k5-4", "cl2-k5-6x16-mp2"])
def test_training_forward_gives_the_same_logits_and_gradients(arch):
    torch.manual_seed(0)
    model = build_model(arch)
    x = torch.rand(6, 1, 144, 144)
    dense, sparse = model.eval()(x), model.training_forward(x)
    assert torch.allclose(dense, sparse, atol=1e-5)
    for g_dense, g_sparse in zip(torch.autograd.grad(dense.square().sum(), list(model.parameters())),
                                 torch.autograd.grad(sparse.square().sum(), list(model.parameters()))):
        assert torch.allclose(g_dense, g_sparse, rtol=1e-4, atol=1e-5)


def test_count_aware_f2_needs_three_separate_peaks():
    model = build_model("count-aware")
    assert model.config.f2_pool == "peaks3" and model.num_parameters() == 8301
    one, three = torch.zeros(1, 16, 40, 40), torch.zeros(1, 16, 40, 40)
    one[..., 20, 20] = 1.0
    three[..., 5, 5] = three[..., 20, 20] = three[..., 35, 35] = 1.0
    assert torch.allclose(model.f2(one), torch.full((1, 16), 1 / 3))
    assert torch.allclose(model.f2(three), torch.ones(1, 16))
    assert torch.equal(build_model("proposed").f2(one), torch.ones(1, 16))


def test_mcnet_with_context_reads_the_context_channels_and_refuses_an_even_pooling():
    from mccscan.models import MCNet, MCNetConfig

    plain, seeing = MCNet(), MCNet(MCNetConfig(context_pool=5))
    assert not any(k.startswith("context") for k in plain.state_dict())  # the shipped network, unchanged
    x = torch.randn(4, 3, 27, 27)
    with torch.no_grad():
        logits = seeing(x)
        x_quiet = x.clone()
        x_quiet[:, 1:] = 0
        assert logits.shape == (4,) and not torch.allclose(logits, seeing(x_quiet))
    with pytest.raises(ValueError, match="takes 1 input channels, not 3"):
        plain(x)  # a context the network was not trained on is refused, not ignored
    with pytest.raises(ValueError, match="odd pooling factor, not 4"):
        MCNetConfig(context_pool=4)


def test_position_aware_mcnet_scores_from_the_whole_last_map_not_its_global_max(tmp_path):
    from mccscan.models import MCNet, MCNetConfig

    torch.manual_seed(0)
    x = torch.randn(4, 1, 27, 27)
    plain, aware = MCNet().eval(), MCNet(MCNetConfig(position_aware=True)).eval()
    with torch.no_grad():
        maps = [m._conv_features(m.convs, x) for m in (plain, aware)]  # (4, 48, 3, 3) each
        assert maps[1].shape == (4, 48, 3, 3) and aware.dense.in_features == 48 * 9 == aware._last_map_px() ** 2 * 48
        assert torch.allclose(plain(x), plain.dense(maps[0].amax(dim=(-2, -1))).squeeze(-1))
        assert torch.allclose(aware(x), aware.dense(maps[1].flatten(1)).squeeze(-1))
    save_weights(aware, tmp_path / "aware.pt", {"name": "aware"})
    loaded = load_model(tmp_path / "aware.pt").model
    assert loaded.config.position_aware and torch.allclose(loaded(x), aware(x))

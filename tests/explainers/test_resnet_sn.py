"""The SN-ResNet: the operator-norm bound, the power iteration, the fixed input size, save/load."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from explainers.models import load_model, save_torch_model
from explainers.resnet_sn import SNConv2d, build_resnet_sn, config_for, conv_bn, operator_norm
from tests.factories import TINY_RESNET

TINY = {**TINY_RESNET, "coeff": 2.0}  # a tighter Lipschitz bound than the shared config's


def exact_operator_norm(conv: SNConv2d) -> float:
    """Largest singular value of the convolution's full matrix (built column by column)."""
    c, h, w = conv.in_channels, *conv.input_hw
    eye = torch.eye(c * h * w).reshape(-1, c, h, w)
    with torch.no_grad():
        cols = F.conv2d(eye, conv.effective_weight(), stride=conv.stride, padding=1)
    return float(torch.linalg.matrix_norm(cols.reshape(len(eye), -1).T, ord=2))


@pytest.mark.parametrize(("hw", "stride"), [((6, 6), 1), ((7, 7), 2), ((8, 8), 2)])
def test_power_iteration_finds_the_operator_norm(hw, stride):
    torch.manual_seed(0)
    conv = SNConv2d(3, 4, hw, stride=stride, coeff=1e9, warmup_iterations=0)  # coeff: no scaling
    conv.power_iteration(300)
    exact = exact_operator_norm(conv)
    assert float(conv.weight_sigma) == pytest.approx(exact, rel=1e-3)
    # conv_transpose2d must map the output shape back onto the input shape (odd sizes, stride 2)
    assert conv.weight_v.shape[2:] == hw


def test_soft_bound_holds_after_training_mode_passes():
    torch.manual_seed(0)
    net = build_resnet_sn(TINY)
    with torch.no_grad():
        for conv in net.sn_convs():
            conv.weight_orig.mul_(20.0)  # far above the bound, so normalisation must act
    raw = [exact_operator_norm_raw(c) for c in net.sn_convs()]
    assert min(raw) > 2.0 * TINY["coeff"]
    net.train()
    x = torch.rand(8, 1, 28, 28)
    for _ in range(30):  # one power iteration per training-mode forward, as in the reference
        net(x)
    net.eval()
    for conv in net.sn_convs():
        independent = operator_norm(conv, n_iter=150, seed=1)
        assert independent <= TINY["coeff"] * 1.01, (conv, independent)
        assert independent >= TINY["coeff"] * 0.9  # it was scaled down to about c, not far below


def exact_operator_norm_raw(conv: SNConv2d) -> float:
    """Operator norm of the un-normalised kernel (power iteration; the layers are too big for an SVD)."""
    saved = conv.coeff
    conv.coeff = 1e12
    try:
        return operator_norm(conv, n_iter=50)
    finally:
        conv.coeff = saved


def test_layers_below_the_bound_are_left_alone():
    torch.manual_seed(0)
    conv = SNConv2d(2, 2, (5, 5), coeff=1e6)
    assert torch.allclose(conv.effective_weight(), conv.weight_orig / (1 + 1e-5))


def test_eval_mode_folds_batch_norm_exactly():
    torch.manual_seed(0)
    net = build_resnet_sn(TINY)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    net.eval()
    x = torch.rand(3, 1, 28, 28)
    block = net.blocks[0]
    fused = conv_bn(block.conv1, block.bn1, F.leaky_relu(conv_bn(net.stem, net.stem_bn, x), 0.01))
    plain = block.bn1(block.conv1(F.leaky_relu(net.stem_bn(net.stem(x)), 0.01)))
    assert torch.allclose(fused, plain, atol=1e-5)


def test_features_are_not_detached_and_output_is_log_softmax():
    net = build_resnet_sn(TINY).eval()
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    log_probs, feature = net.features_and_log_probs(x)
    assert feature.shape == (2, 8)
    (grad,) = torch.autograd.grad(feature.sum(), x)
    assert grad.abs().sum() > 0
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(2), atol=1e-5)


def test_wrong_image_size_is_refused_clearly():
    net = build_resnet_sn(TINY).eval()
    with pytest.raises(ValueError, match=r"28.*Resize"):
        net(torch.rand(1, 1, 32, 32))


def test_save_load_round_trip_keeps_the_sn_buffers(tmp_path):
    torch.manual_seed(0)
    net = build_resnet_sn(TINY).train()
    net(torch.rand(4, 1, 28, 28))  # move u, v, sigma away from their initial values
    net.eval()
    path = tmp_path / "sn.safetensors"
    save_torch_model(path, "resnet_sn", TINY, net)
    model = load_model(path.read_bytes(), "sn.safetensors")
    assert "gradients" in model.capabilities and model.input_shape == (1, 28, 28)
    state = model.module.state_dict()
    assert {"stem.weight_u", "stem.weight_v", "stem.weight_sigma", "stem.weight_orig"} <= set(state)
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value), key
    x = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.as_tensor(x).reshape(-1, 1, 28, 28)).exp().double().numpy()
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=1e-6)
    copy.deepcopy(
        model.module
    )  # hook-based SN breaks deepcopy; ours computes the weight in forward


def test_named_sizes():
    small = build_resnet_sn(config_for("small"))
    assert small.feature_dim == 64 and len(small.sn_convs()) == 9
    big = config_for("resnet18")
    assert big["widths"] == [64, 128, 256, 512] and big["blocks"] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="unknown SN-ResNet size"):
        config_for("huge")

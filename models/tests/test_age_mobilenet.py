"""mobilenet.py: faceres / faceres-deep as plain torch layers, against the TF.js interpreter."""

from __future__ import annotations

import pytest
import torch
from _age_helpers import require_fetched

from agegate_models.mobilenet import FaceMobileNet, SameConv, count_macs, grid_size
from agegate_models.tfjs import same_padding


@pytest.mark.parametrize("kind", ["faceres", "faceres-deep"])
def test_parity_with_tfjs_interpreter(kind):
    js = require_fetched(kind, f"{kind}.json")
    from agegate_models.faceres import FaceRes

    torch.manual_seed(0)
    ref = FaceRes(js, heads=True).eval()
    net = FaceMobileNet(kind, heads=True).eval()
    for s in (224, 144, 99):  # even and odd sizes: TF SAME pads differently
        x = torch.rand(2, 3, s, s) * 255
        with torch.no_grad():
            a, b = ref(x), net(x)
        assert b["tokens"].shape == (2, 1024, grid_size(s), grid_size(s))
        for k in ("tokens", "pooled", "feats", "age_probs", "age", "gender"):
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-4)


def test_same_padding_matches_tf():
    torch.manual_seed(0)
    for size in (7, 8, 9, 16):
        conv = SameConv(2, 2, 3, 2)
        x = torch.rand(1, 2, size, size)
        pt, pb = same_padding(size, 3, 2)
        ref = torch.nn.functional.conv2d(
            torch.nn.functional.pad(x, (pt, pb, pt, pb)), conv.conv.weight, conv.conv.bias, 2
        ).clamp(0, 6)
        torch.testing.assert_close(conv(x), ref)
        assert conv(x).shape[-1] == -(-size // 2)


def test_budget_and_grid():
    assert grid_size(144) == 5 and grid_size(224) == 7 and grid_size(104) == 4
    assert 240e6 < count_macs(144) < 245e6  # + the head: the shipped student stays < 300 M
    assert 567e6 < count_macs(224) < 569e6


def test_trains_without_weights():
    net = FaceMobileNet(load=False)
    x = torch.rand(2, 3, 40, 40) * 255
    net(x)["pooled"].sum().backward()
    assert net.conv1.conv.weight.grad is not None and net.pw[-1].conv.weight.grad is not None

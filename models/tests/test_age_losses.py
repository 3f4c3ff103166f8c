import math

import torch

from agegate_models.losses import (
    LossWeights,
    gaussian_targets,
    i2t_infonce,
    kd_kl,
    soft_ce,
    step_l1,
    t2i_infonce,
    total_loss,
)


def test_gaussian_targets():
    t = gaussian_targets(torch.tensor([10.0, 0.0]), 101, 2.0)
    torch.testing.assert_close(t.sum(1), torch.ones(2))
    assert t[0].argmax() == 10 and t[1].argmax() == 0
    assert torch.isclose(t[0, 12] / t[0, 10], torch.tensor(math.exp(-0.5)))


def test_soft_ce_and_i2t_values():
    logits = torch.zeros(1, 4)
    tgt = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    assert torch.isclose(soft_ce(logits, tgt), torch.tensor(math.log(4.0)))
    # a confident, correct prediction has a small loss; the wrong one a large loss
    good = torch.full((1, 101), -20.0)
    good[0, 30] = 20.0
    bad = torch.full((1, 101), -20.0)
    bad[0, 70] = 20.0
    y = torch.tensor([30.0])
    assert i2t_infonce(good, y, 0.1) < 0.01 and i2t_infonce(bad, y, 0.1) > 30


def test_t2i_infonce():
    # two images aged 20 and 60; prompt similarity is high only for matching pairs
    y = torch.tensor([20.0, 60.0])
    k = torch.arange(101.0)
    sim = torch.stack([-(k - 20).abs() / 100, -(k - 60).abs() / 100])  # [B,K]
    good = t2i_infonce(sim, torch.tensor(50.0), y, 2.0)
    bad = t2i_infonce(sim.flip(0), torch.tensor(50.0), y, 2.0)
    assert good < 0.2 and bad > 5.0
    # uniform similarities: every kept prompt sees log(B)
    flat = t2i_infonce(torch.zeros(2, 101), torch.tensor(1.0), y, 2.0)
    assert torch.isclose(flat, torch.tensor(math.log(2.0)))


def test_step_l1_weights_later_steps_more():
    y = torch.tensor([10.0])
    steps = torch.tensor([[14.0, 12.0, 10.0]])
    # weights 1, 1.5, 2.25 normalised
    w = torch.tensor([1.0, 1.5, 2.25])
    w = w / w.sum()
    exp = (w * torch.tensor([4.0, 2.0, 0.0])).sum()
    assert torch.isclose(step_l1(steps, y, 1.5), exp)


def test_kd_kl():
    p = torch.tensor([[0.2, 0.3, 0.5]])
    assert kd_kl(p.log(), p) < 1e-6
    assert kd_kl(torch.zeros(1, 3), p) > 0


def test_total_loss_terms():
    b, k = 4, 101
    out = {
        "logits": torch.randn(b, k),
        "sim": torch.randn(b, k).tanh(),
        "steps": torch.rand(b, 3) * 80,
        "age": torch.rand(b) * 80,
        "probs": torch.softmax(torch.randn(b, k), -1),
    }
    y = torch.tensor([5.0, 25.0, 45.0, 65.0])
    loss, terms = total_loss(out, y, LossWeights(), torch.tensor(10.0))
    assert set(terms) == {"i2t", "t2i", "step"}
    assert torch.isclose(loss, torch.tensor(sum(terms.values())), rtol=1e-5)
    teacher = {"probs": out["probs"], "age": out["age"]}
    _, terms = total_loss(out, y, LossWeights(), torch.tensor(10.0), True, teacher)
    assert "kd" in terms and terms["kd_age"] < 1e-6

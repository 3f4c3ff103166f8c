import torch
from _age_helpers import tiny_model

from agegate_models.losses import LossWeights, total_loss


def test_shapes_and_outputs():
    m = tiny_model().eval()
    x = torch.rand(3, 3, 32, 32) * 255
    with torch.no_grad():
        o = m(x)
    assert o["logits"].shape == (3, 101) and o["probs"].shape == (3, 101)
    assert o["z"].shape == (3, 32)
    assert o["age"].shape == (3,) and o["sigma"].shape == (3,)
    assert o["steps"].shape == (3, 1 + m.cfg.head.n_steps)
    torch.testing.assert_close(o["steps"][:, -1], o["age"])
    assert (o["sigma"] > 0).all()
    # initial estimate is the expectation of the age softmax
    torch.testing.assert_close(o["steps"][:, 0], o["probs"] @ torch.arange(101.0))
    # frozen prompts (export) give the same result as the live text tower
    m.freeze_prompts()
    with torch.no_grad():
        torch.testing.assert_close(m(x)["age"], o["age"])


def test_text_at_interpolates_prompts():
    m = tiny_model().eval()
    with torch.no_grad():
        p = m.prompt_embeddings()
        e = m.head.text_at(torch.tensor([20.0, 20.5]), p)
    assert torch.nn.functional.cosine_similarity(e[0], p[20], dim=0) > 0.97
    mid = torch.nn.functional.normalize(p[20] + p[21], dim=0)
    assert torch.nn.functional.cosine_similarity(e[1], mid, dim=0) > 0.99


def test_ablation_variants_run():
    for kw in ({"text_fusion": False}, {"contrastive": False}, {"n_steps": 0}):
        m = tiny_model(**kw).eval()
        with torch.no_grad():
            o = m(torch.rand(2, 3, 32, 32) * 255)
        assert o["steps"].shape[1] == 1 + m.cfg.head.n_steps


def test_correction_steps_lower_the_error_on_a_tiny_overfit_set():
    torch.manual_seed(0)
    m = tiny_model(seed=0, n_steps=2)
    m.backbone.requires_grad_(False)
    m.backbone.eval()
    m.freeze_prompts()  # the text side is fixed here: only the image side and correction learn
    m.text.requires_grad_(False)
    n = 24
    g = torch.Generator().manual_seed(0)
    y = torch.linspace(3, 90, n)
    # features that carry the age (plus noise), as a trained image tower would give
    tokens = torch.randn(n, 16, 4, 4, generator=g)
    tokens[:, :4] += (y / 30).view(n, 1, 1, 1) * torch.randn(4, 1, 1, generator=g)
    pooled = tokens.mean(dim=(2, 3))
    w = LossWeights(step=0.5, t2i=0.2)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3e-3)
    m.train()
    for _ in range(120):
        o = m.forward_features(tokens, pooled)
        scale = m.head.logit_scale.exp()
        loss, _ = total_loss(o, y, w, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        st = m.forward_features(tokens, pooled)["steps"]
    mae = (st - y.unsqueeze(1)).abs().mean(0)
    assert mae[-1] < mae[0], mae
    assert mae[1] < 0.5 * mae[0], mae  # the first correction does most of the work

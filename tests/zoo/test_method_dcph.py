"""DCPH (docs/RECIPES.md, "DCPH"): losses against loop transcriptions of the formulas, the proxy
stage, the alternating-rounds state, and the paper preset's numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cmhash.errors import ConfigError, InvalidInputError
from cmhash.zoo.methods.dcph import DCPH, DCPHConfig, build_optimizers, cross_loss, lr_for, mds_loss, quantization_loss
from cmhash.zoo.recipes import make_recipe
from cmhash.zoo.methods.dcph_proxies import PHNet, proxy_loss, proxy_report, train_proxies

GAMMA = 0.3


# ---------------------------------------------------------------- loop transcriptions of docs/RECIPES.md
def _sgn(x: float) -> float:
    return 1.0 if x >= 0 else -1.0


def _parts_ref(u_row, p, y_row, K, gamma=GAMMA):
    """(num_i(u), den_i(u)) for one sample, written literally from the formula."""
    C = len(p)
    logit = [sum(u_row[k] * p[c][k] for k in range(K)) for c in range(C)]
    pos = [c for c in range(C) if y_row[c] > 0]
    n = len(pos)
    m = sum(logit[c] for c in pos) / n
    num = math.exp(gamma * (m - 0.3 * K))
    den = num + sum(math.exp(gamma * logit[c]) for c in range(C) if y_row[c] == 0) + n
    return num, den


def _mds_ref(u, p, y, skip_unlabeled=False):
    u, p, y = u.tolist(), p.tolist(), y.tolist()
    B, K, total = len(u), len(u[0]), 0.0
    for i in range(B):
        if skip_unlabeled and sum(y[i]) == 0:
            continue
        num, den = _parts_ref(u[i], p, y[i], K)
        total += -math.log(num / den)
    return total / B


def _cross_ref(u, v, p, y, skip_unlabeled=False):
    u, v, p, y = u.tolist(), v.tolist(), p.tolist(), y.tolist()
    B, K, total = len(u), len(u[0]), 0.0
    for i in range(B):
        if skip_unlabeled and sum(y[i]) == 0:
            continue
        num_u, _ = _parts_ref(u[i], p, y[i], K)
        _, den_v = _parts_ref([_sgn(x) for x in v[i]], p, y[i], K)
        total += -math.log(num_u / den_v)
    return total / B


def _q_ref(u, b):
    u, b = u.tolist(), b.tolist()
    return sum((b[i][k] - u[i][k]) ** 2 for i in range(len(u)) for k in range(len(u[0]))) / len(u)


def _proxy_loss_ref(U, beta=1.0):
    U = U.tolist()
    C, K = len(U), len(U[0])
    sep = 0.0
    for a in range(C):
        for b in range(C):
            d = sum(U[a][k] * U[b][k] for k in range(K)) - (K if a == b else 0)
            sep += max(d, 0.0) ** 2
    bal = sum(sum(U[a][k] for a in range(C)) ** 2 for k in range(K))
    q = sum((_sgn(U[a][k]) - U[a][k]) ** 2 for a in range(C) for k in range(K))
    return sep / C**2 + 0.05 * bal / C + beta * q / C


def _data(B=7, K=16, C=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.tanh(2 * torch.randn(B, K, generator=g, dtype=dtype))
    v = torch.randn(B, K, generator=g, dtype=dtype)
    p = torch.where(torch.randn(C, K, generator=g) >= 0, 1.0, -1.0).to(dtype)
    y = (torch.rand(B, C, generator=g) < 0.35).to(dtype)
    y[0] = 0
    y[0, 2] = 1            # n_i = 1
    y[1] = 1               # every class positive: no c ∉ Y_i
    y[y.sum(1) == 0, 0] = 1
    return u, v, p, y


def _close(a: float, b: float, rel: float = 1e-5) -> None:
    assert abs(a - b) <= rel * max(abs(b), 1e-12), (a, b)


# ---------------------------------------------------------------- stage-2 losses
@pytest.mark.parametrize("K,dtype", [(16, torch.float64), (32, torch.float64), (16, torch.float32)])
def test_losses_match_loop_transcription(K, dtype):
    u, v, p, y = _data(K=K, dtype=dtype)
    b = torch.where(torch.randn(u.shape, generator=torch.Generator().manual_seed(5)) >= 0, 1.0, -1.0).to(dtype)
    _close(float(mds_loss(u, p, y)), _mds_ref(u.double(), p, y))
    _close(float(cross_loss(u, v, p, y)), _cross_ref(u.double(), v.double(), p, y))
    _close(float(quantization_loss(u, b)), _q_ref(u.double(), b.double()))


def test_cross_term_den_uses_sign_of_v_and_passes_no_gradient():
    u, v, p, y = _data()
    u.requires_grad_(True)
    v.requires_grad_(True)
    (g1,) = torch.autograd.grad(cross_loss(u, v, p, y), u)
    (g2,) = torch.autograd.grad(cross_loss(u, 3 * v, p, y), u)       # same signs, same value & grad
    assert torch.allclose(g1, g2)
    assert float(cross_loss(u, v, p, y).detach()) == pytest.approx(float(cross_loss(u, 3 * v, p, y).detach()))
    assert v.grad is None
    # d/du of −log num_i(u) / B = −γ·(1/n_i)·Σ_{c∈Y_i} p_c / B: den(sign v) is a constant.
    n = y.sum(1, keepdim=True)
    assert torch.allclose(g1, -GAMMA * (y @ p) / n / u.shape[0])


def test_stable_for_large_logits():
    u, _, p, y = _data(K=64)
    big = mds_loss(u, p, y, gamma=30.0)          # exp(30·64) overflows any float; logsumexp does not
    assert torch.isfinite(big) and float(big) >= 0
    ref_scaled = mds_loss(u, p, y, gamma=1.0)
    assert torch.isfinite(ref_scaled)


def test_unlabeled_sample_raises_by_default_and_can_be_excluded():
    u, v, p, y = _data()
    y[3] = 0
    with pytest.raises(InvalidInputError, match="no label"):
        mds_loss(u, p, y)
    with pytest.raises(InvalidInputError, match="no label"):
        cross_loss(u, v, p, y)
    u.requires_grad_(True)
    lm = mds_loss(u, p, y, unlabeled="exclude")
    lc = cross_loss(u, v, p, y, unlabeled="exclude")
    # excluded: 0 for that row, still divided by the full B
    _close(float(lm.detach()), _mds_ref(u.detach(), p, y, skip_unlabeled=True))
    _close(float(lc.detach()), _cross_ref(u.detach(), v, p, y, skip_unlabeled=True))
    (g,) = torch.autograd.grad(lm + lc, u)
    assert torch.isfinite(g).all() and float(g[3].abs().max()) == 0.0


def test_gradients_finite_including_edge_rows():
    u, v, p, y = _data()
    u.requires_grad_(True)
    loss = mds_loss(u, p, y) + 0.1 * cross_loss(u, v, p, y) + 0.1 * quantization_loss(u, torch.sign(v))
    (g,) = torch.autograd.grad(loss, u)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_bad_shapes_raise():
    u, v, p, y = _data()
    with pytest.raises(InvalidInputError):
        mds_loss(u, p, y[:, :-1])
    with pytest.raises(InvalidInputError):
        cross_loss(u, v[:-1], p, y)


# ---------------------------------------------------------------- stage 1: proxies
def test_phnet_architecture():
    kinds = [type(m).__name__ for m in PHNet(24, 16).net]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Linear", "Tanh"]
    net = PHNet(24, 16).net
    assert (net[0].in_features, net[0].out_features, net[3].in_features, net[3].out_features) == (24, 4096, 4096, 16)


def test_proxy_loss_matches_loop_transcription():
    U = torch.tanh(torch.randn(9, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    U[0, 0] = 0.0  # sign(0) = +1
    _close(float(proxy_loss(U)), _proxy_loss_ref(U))
    _close(float(proxy_loss(U, beta=0.5)), _proxy_loss_ref(U, beta=0.5))


@pytest.fixture(scope="module")
def trained():
    return {(C, K): train_proxies(C, K) for C in (24, 80) for K in (16, 64)}


@pytest.mark.parametrize("C,K", [(24, 16), (24, 64), (80, 16), (80, 64)])
def test_trained_proxies_are_distinct_pm1_codes(trained, C, K):
    proxies, report = trained[(C, K)]
    assert proxies.shape == (C, K) and bool(proxies.abs().eq(1).all())
    # Report checked against a loop over pairs.
    ips = [float(proxies[a] @ proxies[b]) for a in range(C) for b in range(C) if a != b]
    assert (report.min, report.max) == (min(ips), max(ips))
    assert report.mean == pytest.approx(sum(ips) / len(ips))
    assert report.loss_end < report.loss_start
    # Measured with the decision of docs/RECIPES.md, "Stage 1: proxy codes" (seed 0): max off-diagonal = 10/16 and 20/64 (C=24),
    # 12/16 and 32/64 (C=80); means -0.41, -1.95, -0.09, -0.45. The bound "< K/2" holds only for
    # C=24, K=64: SGD at lr 1e-3 flips no sign in 200 iterations, so these are the init's random
    # codes. What the Decision does guarantee here: no two classes share a code, and no pair is
    # closer than 3K/4.
    assert report.max < K and report.max <= 0.75 * K
    assert abs(report.mean) < K / 8


def test_proxy_training_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, _ = train_proxies(24, 16, iterations=5, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = train_proxies(24, 16, iterations=5, seed=3)
    c, _ = train_proxies(24, 16, iterations=5, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flipped_counts_sign_changes():
    _, none = train_proxies(10, 16, iterations=0)
    assert none.flipped == 0.0 and none.loss_start == none.loss_end
    _, moved = train_proxies(10, 16, iterations=50, lr=1.0, step_size=1000)
    assert moved.flipped > 0.0


def test_proxy_report_by_hand():
    p = torch.tensor([[1.0, 1, 1, 1], [1, 1, -1, -1], [1, 1, 1, -1]])
    assert proxy_report(p) == (0.0, 2.0, pytest.approx(4 / 3))


# ---------------------------------------------------------------- alternating-rounds state
def _method(N=10, C=6, K=16, seed=0, **cfg):
    _, _, p, _ = _data(C=C, K=K)
    return DCPH(DCPHConfig.paper(bits=K, seed=seed, **cfg), N, p.float())


def test_buffers_seeded_checkpointable():
    m = _method()
    assert m.B_x.shape == m.B_y.shape == m.B.shape == (10, 16)
    assert bool(m.B.abs().eq(1).all()) and not torch.equal(m.B_x, m.B_y)
    assert torch.equal(m.B_x, _method().B_x) and not torch.equal(m.B_x, _method(seed=1).B_x)
    g = torch.Generator().manual_seed(0)  # order: B_x, B_y, B
    assert torch.equal(m.B_x, torch.randn(10, 16, generator=g))
    assert torch.equal(m.B_y, torch.randn(10, 16, generator=g))
    assert torch.equal(m.B, torch.where(torch.randn(10, 16, generator=g) >= 0, 1.0, -1.0))
    assert {"proxies", "B_x", "B_y", "B", "rounds_done"} <= set(m.state_dict())
    m.B_x[2] = 7.0
    m.end_round()
    fresh = _method(seed=9)
    fresh.load_state_dict(m.state_dict())
    for k in ("B_x", "B_y", "B", "proxies", "rounds_done"):
        assert torch.equal(getattr(fresh, k), getattr(m, k))
    assert int(fresh.rounds_done) == 1


def test_phase_loss_uses_other_sides_buffer_and_writes_own():
    m = _method()
    m.train()
    _, _, _, y = _data(B=4, C=6)
    p = m.proxies.double()
    u = torch.tanh(torch.randn(4, 16, generator=torch.Generator().manual_seed(2)))
    idx = torch.tensor([7, 0, 3, 9])
    for phase, own, other in (("image", "B_x", "B_y"), ("text", "B_y", "B_x")):
        other_before, b_before = getattr(m, other)[idx].clone(), m.B[idx].clone()
        own_all = getattr(m, own).clone()
        total, terms = m.phase_loss(phase, u, y, idx)
        expected = (_mds_ref(u.double(), p, y) + 0.1 * _cross_ref(u.double(), other_before.double(), p, y)
                    + 0.1 * _q_ref(u.double(), b_before.double()))
        _close(float(total), expected)
        assert set(terms) == {"mds", "cross", "quant", "total"}
        assert torch.equal(getattr(m, own)[idx], u)                       # B_own[idx] = u
        keep = torch.ones(10, dtype=torch.bool)
        keep[idx] = False
        assert torch.equal(getattr(m, own)[keep], own_all[keep])
        assert torch.equal(getattr(m, other)[idx], other_before)          # other side untouched


def test_eval_mode_does_not_write_and_index_is_required():
    m = _method().eval()
    _, _, _, y = _data(B=2, C=6)
    before = m.B_x.clone()
    m.phase_loss("image", torch.zeros(2, 16), y, torch.tensor([0, 1]))
    assert torch.equal(m.B_x, before)
    with pytest.raises(InvalidInputError):
        m.phase_loss("image", torch.zeros(2, 16), y, None)
    with pytest.raises(InvalidInputError):
        m.phase_loss("image", torch.zeros(2, 16), y, torch.tensor([0, 10]))


def test_round_end_hook():
    m = _method().train()
    m.B_x[0] = 1.0
    m.B_y[0] = -1.0        # sum 0 -> sign(0) = +1
    m.end_round()
    expected = torch.tensor([[1.0 if a + b >= 0 else -1.0 for a, b in zip(rx, ry)]
                             for rx, ry in zip(m.B_x.tolist(), m.B_y.tolist())])
    assert torch.equal(m.B, expected) and bool((m.B[0] == 1).all()) and int(m.rounds_done) == 1


def test_the_loops_recipe_alternates_phases_and_closes_rounds():
    """What the shared loop calls (zoo/recipes.py DCPHRecipe): epoch 2r image, 2r+1 text, B after the text phase."""
    recipe = make_recipe("dcph", DCPHConfig.offline(bits=16, rounds=2, proxy_iterations=2))
    assert recipe.epochs == 4 and [recipe.modalities(e) for e in range(4)] == [("image",), ("text",)] * 2
    heads = dict(zip(("image", "text"), recipe.heads(8, 6)))
    _, _, _, y = _data(B=10, C=6)
    recipe.setup({m: ([], list(h.parameters())) for m, h in heads.items()}, y, steps_per_epoch=1)
    m = recipe.method
    u, idx = torch.full((2, 16), 0.5), torch.tensor([4, 5])
    B0 = m.B.clone()
    recipe.loss({"image": u}, y[idx], 0, idx)
    assert torch.equal(m.B_x[4:6], u)
    recipe.step(0)  # no gradients: nothing moves, but the scheduler follows its optimizer's step
    recipe.end_epoch(0)
    assert torch.equal(m.B, B0) and int(m.rounds_done) == 0
    recipe.loss({"text": -u}, y[idx], 1, idx)
    assert torch.equal(m.B_y[4:6], -u)
    recipe.step(1)
    recipe.end_epoch(1)
    assert torch.equal(m.B, torch.where(m.B_x + m.B_y >= 0, 1.0, -1.0)) and int(m.rounds_done) == 1


def test_build_runs_stage_one():
    m, report = DCPH.build(DCPHConfig.offline(bits=16, proxy_iterations=2), num_train=5, num_classes=12)
    assert m.proxies.shape == (12, 16) and report.num_classes == 12 and list(m.parameters()) == []


# ---------------------------------------------------------------- config, optimizers, heads
def test_paper_defaults_match_recipes():
    c = DCPHConfig.paper()
    assert (c.image_backbone, c.text_backbone, c.text_hidden, c.text_init_std) == ("alexnet", "bow-mlp", 8192, 0.01)
    assert (c.gamma, c.margin_factor, c.cross_weight, c.quant_weight) == (0.3, 0.3, 0.1, 0.1)
    assert c.batch_size == 40 and c.rounds == 80 and make_recipe("dcph", c).epochs == 160
    assert (c.momentum, c.weight_decay, c.image_step_size, c.image_step_gamma, c.text_t0) == (0.0, 1e-5, 50, 0.5, 20)
    assert (c.proxy_hidden, c.proxy_iterations, c.proxy_lr, c.proxy_weight_decay) == (4096, 200, 1e-3, 1e-5)
    assert (c.proxy_step_size, c.proxy_step_gamma, c.proxy_beta, c.proxy_balance_weight) == (100, 0.1, 1.0, 0.05)
    assert DCPHConfig.paper(bits=32).sigma == pytest.approx(9.6)
    nus = {"image": {16: 1.5e-3, 32: 1.2e-3, 64: 1e-3}, "text": {16: 8e-3, 32: 8e-3, 64: 5e-3}}
    coco = {"image": {16: 8e-4, 32: 6e-4, 64: 3e-4}, "text": {16: 2e-3, 32: 1.7e-3, 64: 1e-3}}
    for name, table in (("nus-wide", nus), ("coco", coco)):
        for modality, by_k in table.items():
            for k, lr in by_k.items():
                assert lr_for(name, modality, k) == lr
                assert DCPHConfig.paper(dataset=name, bits=k).learning_rate(modality) == lr
    assert lr_for("NUS_WIDE", "text", 64) == 5e-3 and lr_for("MS-COCO", "image", 16) == 8e-4


@pytest.mark.parametrize("args", [("mirflickr25k", "image", 16), ("coco", "image", 128), ("coco", "audio", 16)])
def test_lr_for_unknown_raises(args):
    with pytest.raises(ConfigError):
        lr_for(*args)


def test_offline_preset_and_json_round_trip():
    o = DCPHConfig.offline(bits=32)
    assert (o.image_backbone, o.text_backbone, o.train_backbones) == ("efficientnet-lite0", "minilm-l6", False)
    assert (o.gamma, o.margin_factor, o.cross_weight, o.quant_weight) == (0.3, 0.3, 0.1, 0.1)
    assert (o.learning_rate("image"), o.learning_rate("text")) == (1.0, 1.0)
    assert DCPHConfig.from_json(o.to_json()) == o
    assert DCPHConfig.from_dict(json.loads(json.dumps(DCPHConfig.paper().to_dict()))) == DCPHConfig.paper()
    with pytest.raises(ConfigError, match="bogus"):
        DCPHConfig.from_dict({**o.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError):
        DCPHConfig.paper(unlabeled="ignore")
    with pytest.raises(ConfigError):
        DCPHConfig.paper(image_backbone="resnet50")


def test_build_optimizers():
    cfg = DCPHConfig.paper(bits=32, dataset="nus-wide")
    wi, wt = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opts = build_optimizers(cfg, [wi], [wt])
    (oi, si), (ot, st) = opts["image"], opts["text"]
    assert isinstance(oi, torch.optim.SGD) and isinstance(ot, torch.optim.SGD)
    gi, gt = oi.param_groups[0], ot.param_groups[0]
    assert (gi["lr"], gi["momentum"], gi["weight_decay"]) == (1.2e-3, 0.0, 1e-5)
    assert (gt["lr"], gt["momentum"], gt["weight_decay"]) == (8e-3, 0.0, 1e-5)
    assert gi["params"][0] is wi and gt["params"][0] is wt
    for _ in range(50):
        oi.step(); si.step()
    assert gi["lr"] == pytest.approx(1.2e-3 * 0.5)
    assert isinstance(st, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts) and st.T_0 == 20
    for _ in range(20):
        ot.step(); st.step()
    assert gt["lr"] == pytest.approx(8e-3)   # warm restart after 20 epochs


def test_hash_head_init():
    """The recipe's heads: the BoW text layer N(0, 0.01) with a zero bias, no dropout on either side."""
    torch.manual_seed(0)
    image, head = make_recipe("dcph", DCPHConfig.paper()).heads(9216, 2000)
    w = head.fc.weight.detach()
    assert abs(float(w.std()) - 0.01) < 5e-4 and float(head.fc.bias.detach().abs().max()) == 0.0
    out = head.train()(torch.randn(3, 2000) * 100)
    assert out.shape == (3, 64) and float(out.detach().abs().max()) <= 1.0
    x = torch.randn(3, 2000)
    assert torch.equal(head.train()(x), head.eval()(x)) and image.dropout.p == 0.0 == head.dropout.p
    torch.manual_seed(1)
    _, minilm = make_recipe("dcph", DCPHConfig.offline()).heads(1, 384)
    torch.manual_seed(1)
    torch.nn.Linear(1, 64)  # the image head is built first: the same draws
    ref = torch.nn.Linear(384, 64)
    assert torch.equal(minilm.fc.weight, ref.weight)  # a non-BoW text tower keeps PyTorch's init


def test_tiny_alternating_run_lowers_the_loss():
    """Six full rounds on separable toy data with linear heads, driven as the shared loop drives a recipe."""
    g = torch.Generator().manual_seed(0)
    C, K, N = 4, 16, 24
    y = torch.zeros(N, C)
    y[torch.arange(N), torch.arange(N) % C] = 1
    x = {"image": y @ torch.randn(C, 8, generator=g), "text": y @ torch.randn(C, 6, generator=g)}
    cfg = DCPHConfig.offline(bits=K, rounds=6, batch_size=8, proxy_iterations=5)
    recipe = make_recipe("dcph", cfg)
    torch.manual_seed(0)
    heads = dict(zip(("image", "text"), recipe.heads(8, 6)))
    recipe.setup({m: ([], list(h.parameters())) for m, h in heads.items()}, y, N // cfg.batch_size)
    m = recipe.method
    first, last = {}, {}
    for epoch in range(recipe.epochs):
        (phase,) = recipe.modalities(epoch)
        for s in range(0, N, cfg.batch_size):
            idx = torch.arange(s, s + cfg.batch_size)
            loss, terms = recipe.loss({phase: heads[phase](x[phase][idx])}, y[idx], epoch, idx)
            recipe.zero_grad(); loss.backward(); recipe.step(epoch)
            first.setdefault(phase, terms["mds"]); last[phase] = terms["mds"]
        recipe.end_epoch(epoch)
    assert int(m.rounds_done) == 6
    assert last["image"] < first["image"] and last["text"] < first["text"]
    assert torch.equal(m.B, torch.where(m.B_x + m.B_y >= 0, 1.0, -1.0))

"""DMsH-LN: the MS loss against a loop transcription of docs/RECIPES.md, "Multi-similarity loss"; LabelNet modes, head, config,
and the shared BertAdam optimizer."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cmhash.errors import ConfigError
from cmhash.zoo.heads import HashHead
from cmhash.zoo.methods.bertadam import build_bertadam, clip_grad_norm_per_tensor
from cmhash.zoo.methods.dmsh import (
    DMsHLN, DMsHLNConfig, build_optimizer, guide_mask, multi_similarity_loss, pull_loss,
    row_normalized_similarity,
)
from cmhash.zoo.methods.labelnet import LabelNet


# ---------------------------------------------------------------- reference (loops, docs/RECIPES.md text)

def ref_mask(labels: list[list[int]]) -> list[list[bool]]:
    """M_ij = 1[y_i · y_j > 0], written as 'share at least one class'."""
    n = len(labels)
    return [[any(labels[i][c] and labels[j][c] for c in range(len(labels[i]))) for j in range(n)] for i in range(n)]


def ref_ms(a, b, mask, thresh=0.5, margin=0.1, sp=2.0, sn=40.0):
    """Direct transcription of the pseudo-code. Returns (L, per-anchor l_i, reason per anchor)."""
    a, b = a.tolist(), b.tolist()
    n, k = len(a), len(a[0])
    raw = [[sum(a[i][q] * b[j][q] for q in range(k)) for j in range(len(b))] for i in range(n)]
    S = []
    for i in range(n):
        norm = math.sqrt(sum(v * v for v in raw[i]))
        S.append([v / norm for v in raw[i]])
    total, per, why = 0.0, [], []
    for i in range(n):
        pos = [S[i][j] for j in range(len(b)) if mask[i][j] and S[i][j] < 1 - 1e-5]
        neg = [S[i][j] for j in range(len(b)) if not mask[i][j]]
        if not pos or not neg:
            per.append(0.0), why.append("empty")
            continue
        negp = [s for s in neg if s + margin > min(pos)]
        posp = [s for s in pos if s - margin < max(neg)]
        if not negp or not posp:
            per.append(0.0), why.append("mined")
            continue
        li = (1 / sp) * math.log(1 + sum(math.exp(-sp * (s - thresh)) for s in posp)) \
            + (1 / sn) * math.log(1 + sum(math.exp(sn * (s - thresh)) for s in negp))
        per.append(li), why.append("used")
        total += li
    return total / n, per, why


def rand_batch(seed: int, n: int = 12, k: int = 8, c: int = 5, p: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    h_v = torch.tanh(2 * torch.randn(n, k, generator=g, dtype=torch.float64))
    h_t = torch.tanh(2 * torch.randn(n, k, generator=g, dtype=torch.float64))
    y = (torch.rand(n, c, generator=g) < p).to(torch.float64)
    return h_v, h_t, y


def close(x: float, ref: float) -> bool:
    return abs(x - ref) <= 1e-5 * max(abs(ref), 1e-12)


# ---------------------------------------------------------------- the MS loss

@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("pair", ["vv", "tt", "vt"])
def test_ms_matches_loop(seed, pair):
    h_v, h_t, y = rand_batch(seed)
    a, b = {"vv": (h_v, h_v), "tt": (h_t, h_t), "vt": (h_v, h_t)}[pair]
    M = ref_mask(y.int().tolist())
    ref, ref_per, _ = ref_ms(a, b, M)
    got = multi_similarity_loss(a, b, guide_mask(y))
    assert close(float(got), ref)
    per = multi_similarity_loss(a, b, guide_mask(y), reduction="none")
    assert all(close(float(x), r) or (r == 0 and float(x) == 0) for x, r in zip(per, ref_per))


def test_random_batches_exercise_every_branch():
    """Guards the test above: the random batches hit both skip rules and used anchors."""
    reasons = set()
    for seed in range(8):
        h_v, h_t, y = rand_batch(seed)
        M = ref_mask(y.int().tolist())
        for a, b in ((h_v, h_v), (h_t, h_t), (h_v, h_t)):
            reasons |= set(ref_ms(a, b, M)[2])
    assert reasons == {"empty", "mined", "used"}


def test_ms_hand_computed_identity():
    """S = I: the self-pair (S=1) is not a positive; anchor 2 then has no positive and is skipped."""
    e = torch.eye(3, dtype=torch.float64)
    y = torch.tensor([[1, 0], [1, 0], [0, 1]], dtype=torch.float64)
    l0 = 0.5 * math.log(1 + math.exp(1.0)) + math.log(1 + math.exp(-20.0)) / 40
    got = multi_similarity_loss(e, e, guide_mask(y))
    assert close(float(got), 2 * l0 / 3)


def test_mining_margin_boundaries_designed_row():
    """With B = I, S = row-normalised A, so S's rows can be set by hand. Anchor 0: positives
    {x0 (self), 0.3, 0.3015}, negatives {0.2005, 0.1995}. neg' keeps 0.2005 (0.3005 > min pos 0.3)
    but not 0.1995; pos' keeps 0.3 (0.2 < max neg 0.2005) but not 0.3015 nor the self pair."""
    x0 = math.sqrt(1 - (0.3**2 + 0.3015**2 + 0.2005**2 + 0.1995**2))
    a = torch.tensor([[x0, 0.3, 0.3015, 0.2005, 0.1995], [0, 1, 0, 0, 0], [0.3, 0.1, 0.9, 0.2, 0.1],
                      [0.5, 0.5, 0.5, 0.5, 0.5], [0.1, 0.6, 0.2, 0.2, 0.5]], dtype=torch.float64)
    y = torch.tensor([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1]], dtype=torch.float64)
    eye = torch.eye(5, dtype=torch.float64)
    per = multi_similarity_loss(a, eye, guide_mask(y), reduction="none")
    l0 = 0.5 * math.log(1 + math.exp(-2 * (0.3 - 0.5))) + math.log(1 + math.exp(40 * (0.2005 - 0.5))) / 40
    assert abs(float(per[0]) - l0) < 1e-10 * l0  # tight: the excluded 0.1995 would add ~1.5e-7
    _, ref_per, _ = ref_ms(a, eye, ref_mask(y.int().tolist()))
    assert all(close(float(x), r) or r == float(x) == 0 for x, r in zip(per, ref_per))


def test_row_normalised_not_cosine():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    s = row_normalized_similarity(a, b)
    raw = a @ b.T
    for i in range(5):
        norm = math.sqrt(sum(float(v) ** 2 for v in raw[i]))
        for j in range(6):
            assert abs(float(s[i, j]) - float(raw[i, j]) / norm) < 1e-12
    cos = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(b, dim=1).T
    assert not torch.allclose(s, cos)


def test_divides_by_B_including_skipped_anchors():
    h_v, _, y = rand_batch(3)
    y[0] = 0  # an anchor without positives (shares nothing, not even with itself)
    M = ref_mask(y.int().tolist())
    ref, per, why = ref_ms(h_v, h_v, M)
    assert why[0] == "empty" and "used" in why
    got = float(multi_similarity_loss(h_v, h_v, guide_mask(y)))
    assert close(got, sum(per) / 12)
    used = sum(w == "used" for w in why)
    assert used < 12 and not close(got, sum(per) / used)


@pytest.mark.parametrize("case", ["no_labels", "all_positive", "only_self"])
def test_degenerate_batches(case):
    h_v, h_t, _ = rand_batch(5, n=6)
    h_v = h_v.clone().requires_grad_(True)
    y = {"no_labels": torch.zeros(6, 3), "all_positive": torch.ones(6, 3), "only_self": torch.eye(6)}[case]
    loss = multi_similarity_loss(h_v, h_t, guide_mask(y))
    ref, _, why = ref_ms(h_v.detach(), h_t, ref_mask(y.int().tolist()))
    if case != "only_self":
        assert set(why) == {"empty"} and float(loss.detach()) == 0.0
    assert close(float(loss.detach()), ref) or ref == float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(h_v.grad).all()
    if case != "only_self":
        assert (h_v.grad == 0).all()


def test_gradients_finite_in_hard_cases():
    h_v, h_t, y = rand_batch(1)
    for a, b in [(h_v.float(), h_t.float()), (h_v.half(), h_t.half()),
                 (torch.sign(h_v).float(), torch.sign(h_v).float()),  # duplicated ±1 codes, S ties
                 (1e3 * h_v.float(), h_t.float())]:
        a = a.clone().requires_grad_(True)
        for sn in (40.0, 1000.0):  # 1000: e^{1000·(s−0.5)} overflows float32 if computed naively
            loss = multi_similarity_loss(a, b, guide_mask(y), scale_neg=sn)
            (ga,) = torch.autograd.grad(loss, a)
            assert torch.isfinite(loss) and torch.isfinite(ga).all()


def test_float32_with_huge_scale_matches_float64_loop():
    h_v, h_t, y = rand_batch(2)
    ref, _, why = ref_ms(h_v, h_t, ref_mask(y.int().tolist()), sn=1000.0)
    got = multi_similarity_loss(h_v.float(), h_t.float(), guide_mask(y), scale_neg=1000.0)
    assert "used" in why and abs(float(got) - ref) <= 1e-4 * abs(ref)


def test_gradient_matches_finite_differences():
    h_v, h_t, y = rand_batch(4)
    a = h_v.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: multi_similarity_loss(x, h_t, guide_mask(y)), (a,))


# ---------------------------------------------------------------- the method module and LabelNet

def test_labels_mode_total_is_three_equal_ms_terms_and_mask_is_P():
    h_v, h_t, y = rand_batch(6)
    method = DMsHLN(DMsHLNConfig.paper(labelnet="labels", bits=8), num_classes=5)
    assert method.mask(y, epoch=0).tolist() == ref_mask(y.int().tolist())
    total, terms = method.loss(h_v, h_t, y, epoch=7)
    M = ref_mask(y.int().tolist())
    ref = ref_ms(h_v, h_v, M)[0] + ref_ms(h_t, h_t, M)[0] + ref_ms(h_v, h_t, M)[0]
    assert close(float(total), ref) and set(terms) == {"ms_vv", "ms_tt", "ms_vt", "total"}


def test_random_labelnet_never_trains_and_follows_alpha():
    h_v, h_t, y = rand_batch(7)
    method = DMsHLN(DMsHLNConfig.paper(labelnet="random", bits=8), num_classes=5)
    net = method.labelnet
    assert [tuple(l.weight.shape) for l in net.net if isinstance(l, torch.nn.Linear)] == [(6, 5), (8, 6)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.requires_grad_(True)  # even if a loop unfroze it, the boolean mask passes no gradient
    hv = h_v.clone().requires_grad_(True)
    total, terms = method.loss(hv, h_t, y, epoch=3)
    assert "pull" not in terms
    total.backward()
    assert hv.grad is not None and all(p.grad is None for p in net.parameters())
    assert method.prepare(y) == {} and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # G = tanh(√(epoch+1)·x): epoch 3 → α = 2.
    x = net.net[2](torch.relu(net.net[0](y.float())))
    assert torch.allclose(method.guide(y, 3), torch.tanh(2.0 * x))
    assert torch.equal(method.mask(y, 3), (torch.tanh(2.0 * x) @ torch.tanh(2.0 * x).T) > 0)
    # Same seed, same fixed network.
    other = DMsHLN(DMsHLNConfig.paper(labelnet="random", bits=8), num_classes=5)
    assert all(torch.equal(before[k], v) for k, v in other.labelnet.state_dict().items())


def test_trained_labelnet_label_stage_and_pull():
    g = torch.Generator().manual_seed(0)
    classes = torch.eye(6)[torch.randint(0, 6, (64,), generator=g)]
    y = ((classes + torch.eye(6)[torch.randint(0, 6, (64,), generator=g)]) > 0).float()
    cfg = DMsHLNConfig.offline(labelnet="trained", bits=16, label_stage_epochs=40)
    method = DMsHLN(cfg, num_classes=6)
    h_v, h_t, _ = rand_batch(8, n=16, k=16)
    with pytest.raises(ConfigError):
        method.loss(h_v, h_t, y[:16], epoch=0)
    before = [p.clone() for p in method.labelnet.parameters()]
    stats = method.prepare(y)
    assert any(not torch.equal(b, p) for b, p in zip(before, method.labelnet.parameters()))
    assert stats["label_mask_agreement"] > 0.95
    assert not any(p.requires_grad for p in method.labelnet.parameters())
    yb = y[:16]
    codes = torch.where(method.labelnet.logits(yb) >= 0, 1.0, -1.0).double()
    total, terms = method.loss(h_v, h_t, yb, epoch=0)
    # Pull term by hand, total = three MS terms + 1.0 · pull, mask from the sign codes.
    pull = sum(float((h_v[i, q] - codes[i, q]) ** 2 + (h_t[i, q] - codes[i, q]) ** 2)
               for i in range(16) for q in range(16)) / (16 * 16)
    M = [[float(codes[i] @ codes[j]) > 0 for j in range(16)] for i in range(16)]
    ref = ref_ms(h_v, h_v, M)[0] + ref_ms(h_t, h_t, M)[0] + ref_ms(h_v, h_t, M)[0] + 1.0 * pull
    assert close(terms["pull"], pull) and close(float(total), ref)
    assert close(float(pull_loss(h_v, h_t, codes)), pull)
    # The stage does not run twice, and its completion is checkpointed.
    state = method.state_dict()
    assert bool(state["label_stage_done"]) and method.prepare(y) == {}
    fresh = DMsHLN(cfg, num_classes=6)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.mask(yb, 0), method.mask(yb, 0))


def test_labelnet_alpha():
    assert [LabelNet.alpha(e) for e in (0, 3, 8)] == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------- hash head

def test_hash_head_init_and_dropout_on_logits():
    torch.manual_seed(0)
    head = HashHead(512, 64, init="kaiming_fan_out")
    bound = math.sqrt(6 / 64)  # Kaiming uniform, gain √2, fan_out = K
    w = head.fc.weight
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound and (head.fc.bias == 0).all()
    assert abs(float(w.detach().std()) - bound / math.sqrt(3)) < 0.01
    f = torch.randn(32, 512)
    logits = head.fc(f)
    head.eval()
    assert torch.allclose(head(f), torch.tanh(logits))
    head.train()
    h = head(f)
    dropped = h == 0
    assert 0.1 < float(dropped.float().mean()) < 0.3
    assert torch.allclose(h[~dropped], torch.tanh(logits[~dropped] / 0.8), atol=1e-6)
    default = HashHead(512, 64, init="default")
    assert (default.fc.bias != 0).any() and default.fc.weight.abs().max() <= 1 / math.sqrt(512)
    with pytest.raises(ConfigError):
        HashHead(4, 4, init="xavier")


# ---------------------------------------------------------------- config

def test_paper_preset_matches_recipes():
    c = DMsHLNConfig.paper()
    assert (c.image_backbone, c.text_backbone) == ("clip-vit-b32-image", "clip-vit-b32-text")
    assert (c.epochs, c.batch_size, c.seed, c.drop_last) == (100, 128, 3407, True)
    assert (c.ms_threshold, c.ms_margin, c.ms_scale_pos, c.ms_scale_neg, c.ms_pos_eps) == (0.5, 0.1, 2, 40, 1e-5)
    assert (c.hash_dropout, c.head_init) == (0.2, "kaiming_fan_out")
    assert (c.lr_backbone, c.lr_head, c.adam_betas, c.adam_eps) == (1e-5, 1e-3, (0.9, 0.98), 1e-6)
    assert (c.weight_decay, c.warmup, c.max_grad_norm) == (0.2, 0.1, 1.0)
    assert c.labelnet == "trained"


def test_offline_preset_and_json_round_trip():
    o = DMsHLNConfig.offline(bits=16)
    assert (o.image_backbone, o.text_backbone, o.epochs, o.batch_size) == ("efficientnet-lite0", "minilm-l6", 30, 16)
    assert (o.ms_scale_neg, o.ms_margin, o.bits) == (40, 0.1, 16)
    for cfg in (DMsHLNConfig.paper(labelnet="random"), o):
        assert DMsHLNConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
        assert DMsHLNConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError, match="scale_negative"):
        DMsHLNConfig.from_dict({**o.to_dict(), "scale_negative": 40})
    with pytest.raises(ConfigError, match="labelnet"):
        DMsHLNConfig(labelnet="learned")


# ---------------------------------------------------------------- BertAdam

def expected_factor(step: int, total: int) -> float:
    x = step / total
    return x / 0.1 if x < 0.1 else 0.5 * (1 + math.cos(math.pi * x))


def test_bertadam_schedule_follows_the_formula():
    w = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(1))
    opt, sched = build_bertadam([{"params": [w], "lr": 1e-5}, {"params": [b], "lr": 1e-3}], total_steps=200)
    seen = {}
    for step in range(200):
        seen[step] = [g["lr"] for g in opt.param_groups]
        w.grad, b.grad = torch.ones(3), torch.ones(1)
        opt.step()
        sched.step()
    for step in (0, 7, 19, 20, 21, 100, 150, 199):
        f = expected_factor(step, 200)
        assert seen[step] == pytest.approx([1e-5 * f, 1e-3 * f], rel=1e-12)
    assert seen[0] == [0.0, 0.0] and seen[20][1] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(0.1 * math.pi)))


def test_bertadam_update_rule_and_decay_on_every_parameter():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    opt, sched = build_bertadam([{"params": [p], "lr": 0.1}], total_steps=10)  # warmup = 1 step
    grads = [torch.tensor([0.3, -0.1, 0.0], dtype=torch.float64), torch.tensor([0.2, 0.4, -0.5], dtype=torch.float64)]
    p.grad = grads[0]
    opt.step(), sched.step()
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))  # lr 0 at step 0
    p.grad = grads[1]
    opt.step()
    lr = 0.1 * 0.5 * (1 + math.cos(math.pi * 0.1))
    expect = []
    for q, p0 in enumerate([1.0, -2.0, 0.5]):
        g0, g1 = float(grads[0][q]), float(grads[1][q])
        m = 0.9 * (0.1 * g0) + 0.1 * g1  # no bias correction
        v = 0.98 * (0.02 * g0 * g0) + 0.02 * g1 * g1
        expect.append(p0 - lr * (m / (math.sqrt(v) + 1e-6) + 0.2 * p0))
    assert p.detach().tolist() == pytest.approx(expect, rel=1e-12)


def test_clip_is_per_tensor():
    a, b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([6.0, 8.0, 0.0, 0.0]), torch.tensor([0.3, 0.4])  # norms 10 and 0.5
    clip_grad_norm_per_tensor([a, b], max_norm=1.0)
    assert float(a.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    assert b.grad.tolist() == pytest.approx([0.3, 0.4])  # a global clip would have shrunk it


def test_build_optimizer_groups():
    cfg = DMsHLNConfig.offline()
    bb, head = torch.nn.Linear(3, 3), HashHead(3, 8, init="kaiming_fan_out")
    opt, sched = build_optimizer(cfg, bb.parameters(), head.parameters(), steps_per_epoch=4)
    assert [g["initial_lr"] for g in opt.param_groups] == [1e-5, 1e-3]
    assert all(g["weight_decay"] == 0.2 and g["betas"] == (0.9, 0.98) and g["eps"] == 1e-6 for g in opt.param_groups)
    assert sched.lr_lambdas[0](12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 12 / 120)))

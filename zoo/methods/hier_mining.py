"""DHaPH's hierarchy-aware proxy loss (HIER, CVPR 2023, in a Poincaré ball): mining and LCA loss.

Transcribed from the authors' `HPLoss` (docs/RECIPES.md, "Loss 2: hierarchy-aware proxy loss"), vectorized:

* mining: mutual top-k neighbours by `torch.topk` + a mask and its transpose; sampling by
  `torch.multinomial` over each anchor's candidate mask (uniform, with replacement), instead of a
  Python loop of `np.random.choice`;
* the Gumbel noise of the hard Gumbel-softmax and the sampling take an optional `torch.Generator`,
  so a seeded run is reproducible; `hard_argmax=True` zeroes the noise (a plain straight-through
  argmax) for deterministic tests. The noise has PyTorch's distribution but is drawn from
  `torch.rand` (see `gumbel_noise`), so it is not the same stream as `F.gumbel_softmax`'s.

Two details of the authors' code are kept on purpose:

* negatives are every column that is not a mutual neighbour, *including the anchor itself*
  (their diagonal is filled with -1 and negatives are `sim < 1`) and one-sided neighbours;
* the anchor's own column counts among its top-k (it is its own nearest neighbour), so "top-15"
  leaves 14 slots for others.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .poincare import dist_matrix

__all__ = [
    "HierOutput",
    "Triplets",
    "gumbel_noise",
    "gumbel_softmax_hard",
    "hier_proxy_loss",
    "lca_triplet_loss",
    "mine_reciprocal_triplets",
    "reciprocal_neighbours",
]


class Triplets(NamedTuple):
    """Row indices (anchor i, positive j, negative k), each of shape (n_triplets,)."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor


class HierOutput(NamedTuple):
    """`total` (differentiable), its four parts, and the triplets that were sampled (for tests/logs)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    triplets: dict[str, Triplets]


def reciprocal_neighbours(sim: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual top-k mask (diagonal excluded) and which anchors are kept.

    An anchor with at most one mutual neighbour is skipped, as the authors do. `topk` is capped at
    the number of rows so that batches smaller than k (a last partial batch) still work; the
    authors' `torch.topk` would raise there.
    """
    n = sim.shape[0]
    idx = torch.topk(sim, min(topk, n), dim=1).indices
    nn_mask = torch.zeros(n, n, dtype=torch.bool, device=sim.device).scatter_(1, idx, True)
    mutual = nn_mask & nn_mask.T
    mutual.fill_diagonal_(False)
    return mutual, mutual.sum(1) > 1


def mine_reciprocal_triplets(sim: torch.Tensor, topk: int, per_anchor: int,
                             generator: torch.Generator | None = None) -> Triplets:
    """Sample `per_anchor` (anchor, mutual neighbour, non-mutual) triplets for each kept anchor.

    Anchors come out in increasing order, each repeated `per_anchor` times (the authors' layout).
    Positives and negatives are drawn uniformly with replacement, independently.
    """
    mutual, keep = reciprocal_neighbours(sim, topk)
    anchors = torch.nonzero(keep).flatten()
    if anchors.numel() == 0:
        empty = torch.empty(0, dtype=torch.long, device=sim.device)
        return Triplets(empty, empty, empty)
    pos_w = mutual[anchors].float()
    neg_w = (~mutual[anchors]).float()  # includes the anchor itself, as in the authors' code
    pos = torch.multinomial(pos_w, per_anchor, replacement=True, generator=generator)
    neg = torch.multinomial(neg_w, per_anchor, replacement=True, generator=generator)
    return Triplets(anchors.repeat_interleave(per_anchor), pos.flatten(), neg.flatten())


def gumbel_noise(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel samples `-log(-log U)`, U ~ Uniform(0, 1).

    Same distribution as PyTorch's `-log(Exp(1))`, but `torch.rand` is ~5× faster than
    `exponential_` on CPU, and this noise is drawn for 25,000 × 500 entries per proxy term.
    U is kept above the smallest normal float so that the logs stay finite.
    """
    u = torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)
    return u.clamp_min_(torch.finfo(like.dtype).tiny).log_().neg_().log_().neg_()  # in place: 12.5M entries


def gumbel_softmax_hard(logits: torch.Tensor, generator: torch.Generator | None = None,
                        hard_argmax: bool = False) -> torch.Tensor:
    """`F.gumbel_softmax(logits, tau=1, hard=True, dim=1)` with an injectable generator.

    The output is one-hot in value (the argmax of the noisy logits) and carries the gradient of
    the soft probabilities `softmax(logits + noise)` (straight-through), exactly like PyTorch's.
    `hard_argmax=True` drops the noise: a deterministic straight-through argmax.
    """
    noisy = logits if hard_argmax else logits + gumbel_noise(logits.shape, logits, generator)
    y_soft = noisy.softmax(dim=1)
    index = y_soft.argmax(dim=1, keepdim=True)  # first maximum on ties
    y_hard = torch.zeros_like(logits).scatter_(1, index, 1.0)
    return y_hard - y_soft.detach() + y_soft


def lca_triplet_loss(dist: torch.Tensor, triplets: Triplets, margin: float = 0.1, tau: float = 0.1,
                     generator: torch.Generator | None = None, hard_argmax: bool = False) -> torch.Tensor:
    """HIER's LCA triplet loss on node→proxy distances `dist` (n_nodes × n_proxies).

    For each triplet the LCA of (i, j) is the proxy closest to both (smallest max-distance), drawn
    by a hard Gumbel-softmax at temperature `tau`; same for (i, j, k). i and j are pulled towards
    their own LCA relative to the triplet's, k pushed from the pair's LCA. Triplets whose two LCAs
    coincide contribute 0 but still count in the mean. No triplet: 0 (connected to the graph).
    """
    if triplets.anchor.numel() == 0:
        return dist.sum() * 0.0
    d3 = dist[torch.stack(tuple(triplets))]  # 3 × T × P: rows of i, j, k (one gather, one scatter back)
    d_i, d_j, d_k = d3
    max_ij = torch.maximum(d_i, d_j)
    # `-max / tau` written exactly as the authors do: proxy→proxy rows hold near-ties (candidates i
    # and j both sit at d_ij ≈ d_ji), which another rounding of the logits could flip.
    lca_ij = gumbel_softmax_hard(-max_ij / tau, generator, hard_argmax)
    lca_ijk = gumbel_softmax_hard(-torch.maximum(d_k, max_ij) / tau, generator, hard_argmax)
    # s[t, x, y] = d(x_t, lca_y): x ∈ (i, j, k), y ∈ (ij, ijk); one batched product instead of six.
    s = torch.einsum("xtp,ytp->txy", d3, torch.stack((lca_ij, lca_ijk)))
    loss = (F.relu(s[:, 0, 0] - s[:, 0, 1] + margin)
            + F.relu(s[:, 1, 0] - s[:, 1, 1] + margin)
            + F.relu(s[:, 2, 1] - s[:, 2, 0] + margin))
    differ = (lca_ij.argmax(1) != lca_ijk.argmax(1)).to(loss.dtype)
    return (loss * differ).mean()


def hier_proxy_loss(z_v: torch.Tensor, z_t: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor, *,
                    c: float = 0.1, topk: int = 15, per_anchor: int = 50, margin: float = 0.1,
                    tau: float = 0.1, mobius_eps: float = 1e-5, generator: torch.Generator | None = None,
                    hard_argmax: bool = False) -> HierOutput:
    """L_hier = Σ over modalities of [LCA loss on sample triplets + LCA loss on proxy triplets].

    `z_v`, `z_t` (B×K) and `proxies` (P×K) are points of the ball (outputs of `HierarchyHead` and
    `HyperbolicProxies`). Per modality: sample similarities `exp(-d)` + 1 for label-sharing pairs
    (diagonal included) → mutual top-k triplets → loss on sample→proxy distances; proxy
    similarities `exp(-d)` → triplets → loss on proxy→proxy distances. The proxy→proxy distances
    are the same for both modalities, so they are computed once; the two modalities still mine
    their proxy triplets independently, as the authors do.
    """
    share = (labels.float() @ labels.float().T) > 0
    d_pp = dist_matrix(proxies, proxies, c, mobius_eps)
    sim_pp = torch.exp(-d_pp.detach())
    terms: dict[str, torch.Tensor] = {}
    used: dict[str, Triplets] = {}
    for name, z in (("v", z_v), ("t", z_t)):
        with torch.no_grad():  # mining only ranks: no gradient, as the authors' `.detach()`
            sim = torch.exp(-dist_matrix(z, z, c, mobius_eps)) + share.to(z.dtype)
        d_sp = dist_matrix(z, proxies, c, mobius_eps)
        used[f"{name}_samples"] = tri = mine_reciprocal_triplets(sim, topk, per_anchor, generator)
        terms[f"hier_{name}_samples"] = lca_triplet_loss(d_sp, tri, margin, tau, generator, hard_argmax)
        used[f"{name}_proxies"] = tri = mine_reciprocal_triplets(sim_pp, topk, per_anchor, generator)
        terms[f"hier_{name}_proxies"] = lca_triplet_loss(d_pp, tri, margin, tau, generator, hard_argmax)
    total = sum(terms.values())
    return HierOutput(total, terms, used)  # type: ignore[arg-type]

"""Contrastive losses: GCL, and the CL and pairwise baselines it is ablated against (pairwise is this
project's own ablation; the paper's "+Pairwise" rows mean training on image-caption pair data).

Every loss is an `nn.Module` with one call contract:

    loss = criterion(image_features, text_features, logit_scale, pair_text_features=None)

    image_features: (N, D) float, row j is the photo of sample j
    text_features:  (N, D) float, row j is the note of sample j
    pair_text_features: None, or (N, D) float: row j is the note fused into sample j's photo+note
                    (another caption of the same photo: `edge-gcl train --pair-caption other`).
                    None fuses text_features, the same caption (the paper's CLIP-SF). CL has no
                    photo+note and ignores it.
    logit_scale:    scalar tensor (or float) = 1/tau, already exponentiated. The model owns a
                    learnable log-scale (`DualEncoder.logit_scale`) and passes `.exp()`; a fixed
                    temperature is just a constant, e.g. `torch.tensor(1 / 0.07)`.
    returns:        scalar tensor, the mean over all anchor terms.

Features are L2-normalised inside the loss (a no-op for our towers, whose outputs already are).
The fused modality is e_it = normalize(image_features + pair_text_features, text_features when None):
the sum of the raw inputs, then normalised, the same vector `edge_gcl.embedding.fuse` indexes at
search time.

Distributed training (`torch.distributed` initialised, world size W > 1): each loss first gathers
the features of every rank (`gather_features`), so negatives and positives come from the global
batch of W * N samples, ordered by rank. Every rank then computes the *full global loss*:

  * its value equals the single-process loss on the concatenated global batch;
  * the gradient reaching this rank's local features is W times the matching slice of the
    single-process gradient (the backward of `gather_features` sums the W identical losses);
  * so after DDP averages parameter gradients over the W ranks, every parameter (both towers
    and `logit_scale`) gets exactly the single-process gradient of the global-batch loss.

Every rank must hold the same local batch size N (use `drop_last=True`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Distributed gathering


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the sum of all ranks' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # (N, D) -> (W * N, D)
        world_size, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # (W * N, D) -> (N, D)
        grad = grad.clone(memory_format=torch.contiguous_format)  # all_reduce works in place
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_features(*features: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(N, D) local features of every rank -> (W * N, D) global features, ordered by rank.

    Rank r's rows sit at [r * N, (r + 1) * N) and are differentiable: the backward all-reduces
    the gradient of the gathered tensor, so rank r's local features receive
    sum over ranks r' of d(loss on r') / d(slice r). Requires an initialised process group and
    the same N on every rank.
    """
    return tuple(_GatherWithGrad.apply(f) for f in features)


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _global_batch(
    image: torch.Tensor, text: torch.Tensor, pair_text: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the contract, then gather the global batch when running distributed -> (image, text,
    the text fused into the photo+note: `text` itself when `pair_text` is None)."""
    if image.ndim != 2 or image.shape != text.shape or (pair_text is not None and pair_text.shape != text.shape):
        shapes = f" and pair_text_features {tuple(pair_text.shape)}" if pair_text is not None else ""
        raise ValueError(
            f"image_features {tuple(image.shape)}, text_features {tuple(text.shape)}{shapes}: "
            "expected (N, D) tensors of the same shape"
        )
    if _is_distributed():
        if pair_text is None:
            image, text = gather_features(image, text)
        else:
            image, text, pair_text = gather_features(image, text, pair_text)
    return image, text, text if pair_text is None else pair_text


def _modalities(
    image: torch.Tensor, text: torch.Tensor, pair_text: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> e_i, e_t, e_it, each (N, D) and L2-normalised; e_it fuses the raw inputs (image + pair_text,
    or + text when None)."""
    fused = image + (text if pair_text is None else pair_text)
    return F.normalize(image, dim=-1), F.normalize(text, dim=-1), F.normalize(fused, dim=-1)


def _symmetric_infonce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Mean of InfoNCE a->b and b->a; row j of a and b is the positive pair, (N, D) each."""
    logits = logit_scale * a @ b.T  # (N, N)
    labels = torch.arange(a.shape[0], device=a.device)  # (N,)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


# ---------------------------------------------------------------------------------------------
# Losses


class GCLLoss(nn.Module):
    """Generalized Contrastive Learning over the modalities M = {i, t, it} (Lee et al., 2025).

    The paper's loss contrasts every embedding e_a^j (3N anchors) against all 3N embeddings of the
    batch in one softmax, the anchor itself included (its denominator runs over every m and k):

        L = -1/(6N) sum_j sum_{a != b} log( exp(e_a^j . e_b^j / tau)
                                            / sum_{m in M} sum_k exp(e_a^j . e_m^k / tau) )

    The positives of anchor (a, j) are the same sample j in the two other modalities; both share
    one denominator.

    This implementation makes one change, a choice of ours and not the paper's formula: the
    anchor's own term (m, k) = (a, j) is masked out of the denominator, so each anchor's softmax
    runs over the other 3N - 1 embeddings (as SimCLR's NT-Xent masks k = i). Why: that term is
    always exp(1 / tau), the largest logit in the row (a unit vector against itself), and it carries
    no information, yet it takes most of the softmax mass (measured on correlated random pairs,
    N = 256, D = 512: 86% of it at tau = 0.07, 99.9% at 0.02). The gradient on every other logit is
    its softmax probability, so the push away from the negatives shrinks by the same factor (7x at
    tau = 0.07, about 800x at 0.02) while the pull between positives does not: with the anchor
    included, the loss is mostly alignment with little contrast. Masked, the minimum (perfectly
    aligned, tau -> 0) is log 2, half the mass on each positive; with the anchor it would be log 3.

    `modality_margin` m (0: the formula above) is a second choice of ours: every cross-modal cosine
    loses m times the share of modality the two do not have in common before the softmax (i-t: m,
    i-it and t-it: m / 2; `edge_gcl.embedding.modality_offset`, the offset search can add, with the
    sign turned). A positive (always cross-modal) must then beat the anchor's own-modality negatives
    by m, so the embeddings themselves carry the offset: on photos a model never saw, words score
    lower against their photo than against notes of a like scene, and this trains that gap away.

    `text_photo_weight` w (1: the formula above) is a third: the two positives between a note and
    its photo (t->i and i->t) weigh w in the sum and the other four 1, and the sum is divided by
    (4 + 2w) N in place of 6N, so the loss keeps its scale. w > 1 asks more of a typed query's
    photo against the notes in its softmax; that pair is the one search needs most.
    """

    def __init__(self, modality_margin: float = 0.0, text_photo_weight: float = 1.0) -> None:
        super().__init__()
        self.modality_margin = float(modality_margin)
        self.text_photo_weight = float(text_photo_weight)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        pair_text_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image, text, pair_text = _global_batch(image_features, text_features, pair_text_features)
        n = image.shape[0]
        emb = torch.cat(_modalities(image, text, pair_text))  # (3N, D): rows [i; t; it], row a*N + j
        scores = emb @ emb.T  # (3N, 3N)
        if self.modality_margin:
            # share of modality not in common, blocks [i; t; it] x [i; t; it]
            share = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [0.5, 0.5, 0.0]], dtype=emb.dtype, device=emb.device)
            scores = scores - self.modality_margin * share.repeat_interleave(n, 0).repeat_interleave(n, 1)
        logits = logit_scale * scores
        self_mask = torch.eye(3 * n, dtype=torch.bool, device=emb.device)
        logits = logits.masked_fill(self_mask, float("-inf"))  # an anchor is not its own candidate
        log_prob = logits.log_softmax(dim=1)  # (3N, 3N)
        rows = torch.arange(3 * n, device=emb.device)  # (3N,)
        # Row a*N + j's positives: the same j in modalities a+1 and a+2 (mod 3).
        next_, after = log_prob[rows, (rows + n) % (3 * n)], log_prob[rows, (rows + 2 * n) % (3 * n)]  # (3N,) each
        w = self.text_photo_weight
        if w == 1:
            return -(next_ + after).sum() / (6 * n)
        # i -> t is block i's next modality, t -> i block t's one after
        return -(w * next_[:n].sum() + after[:n].sum() + next_[n:2 * n].sum() + w * after[n:2 * n].sum()
                 + next_[2 * n:].sum() + after[2 * n:].sum()) / ((4 + 2 * w) * n)


class CLLoss(nn.Module):
    """The CLIP baseline: symmetric image<->text InfoNCE, mean of CE(i->t) and CE(t->i)."""

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        pair_text_features: torch.Tensor | None = None,  # no photo+note in CL: unused
    ) -> torch.Tensor:
        image, text, _ = _global_batch(image_features, text_features)
        e_i, e_t, _ = _modalities(image, text)
        return _symmetric_infonce(e_i, e_t, logit_scale)


class PairwiseLoss(nn.Module):
    """This project's ablation of GCL: one softmax per modality pair instead of one over all of M.

    Not the paper's "+Pairwise" rows, which mean training on image-caption pair data, not a loss.

    For each of the six ordered pairs (a, b) of {i, t, it}, InfoNCE of anchor e_a^j against the
    candidates e_b^1..e_b^N only; the six terms are averaged (each ordered pair weighs 1/6).
    """

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        pair_text_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        image, text, pair_text = _global_batch(image_features, text_features, pair_text_features)
        e_i, e_t, e_it = _modalities(image, text, pair_text)
        pairs = [(e_i, e_t), (e_i, e_it), (e_t, e_it)]  # each covers (a, b) and (b, a)
        return sum(_symmetric_infonce(a, b, logit_scale) for a, b in pairs) / len(pairs)


LOSSES: dict[str, type[nn.Module]] = {"gcl": GCLLoss, "cl": CLLoss, "pairwise": PairwiseLoss}


def create_loss(name: str, *, modality_margin: float = 0.0, text_photo_weight: float = 1.0) -> nn.Module:
    """`create_loss("gcl")` -> GCLLoss(); the name is the training flag's value. `modality_margin`
    and `text_photo_weight` are GCL's (see `GCLLoss`); the other losses have neither."""
    if name not in LOSSES:
        raise ValueError(f"loss {name!r}: expected one of {sorted(LOSSES)}")
    if modality_margin and name != "gcl":
        raise ValueError(f"--modality-margin {modality_margin}: only the gcl loss has one (loss {name!r})")
    if not 0 < text_photo_weight <= 100:
        raise ValueError(f"--text-photo-weight {text_photo_weight}: expected a weight above 0, at most 100")
    if text_photo_weight != 1 and name != "gcl":
        raise ValueError(f"--text-photo-weight {text_photo_weight}: only the gcl loss has one (loss {name!r})")
    return GCLLoss(modality_margin, text_photo_weight) if name == "gcl" else LOSSES[name]()

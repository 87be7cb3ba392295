"""The losses against direct loop-based references, and the 2-process gathered loss."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from edge_gcl.loss import LOSSES, CLLoss, GCLLoss, PairwiseLoss, create_loss

# ---------------------------------------------------------------------------------------------
# Direct references: python floats, float64, one term of the formula per loop iteration.

MODALITIES = ("i", "t", "it")
ORDERED_PAIRS = [(a, b) for a in MODALITIES for b in MODALITIES if a != b]  # 6


def _normalize(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def _dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v, strict=True))


def _ref_embeddings(image: torch.Tensor, text: torch.Tensor, pair: torch.Tensor | None = None) -> dict[str, list[list[float]]]:
    img, txt = image.double().tolist(), text.double().tolist()
    fused = txt if pair is None else pair.double().tolist()  # the note fused into the photo+note
    return {
        "i": [_normalize(v) for v in img],
        "t": [_normalize(v) for v in txt],
        "it": [_normalize([x + y for x, y in zip(u, v, strict=True)]) for u, v in zip(img, fused, strict=True)],
    }


def ref_gcl(image: torch.Tensor, text: torch.Tensor, scale: float, margin: float = 0.0,
            pair: torch.Tensor | None = None, text_photo_weight: float = 1.0) -> float:
    e, n = _ref_embeddings(image, text, pair), image.shape[0]
    # the modality margin: a cross-modal cosine loses margin x the share of modality not in common
    parts = {"i": {"i"}, "t": {"t"}, "it": {"i", "t"}}

    def score(a: str, u: list[float], m: str, v: list[float]) -> float:
        return (_dot(u, v) - margin * (1 - len(parts[a] & parts[m]) / len(parts[a] | parts[m]))) * scale

    total, weights = 0.0, 0.0
    for j in range(n):
        for a, b in ORDERED_PAIRS:
            weight = text_photo_weight if {a, b} == {"i", "t"} else 1.0  # the note<->photo positives
            denominator = 0.0
            for m in MODALITIES:
                for k in range(n):
                    if (m, k) != (a, j):
                        denominator += math.exp(score(a, e[a][j], m, e[m][k]))
            total += weight * math.log(math.exp(score(a, e[a][j], b, e[b][j])) / denominator)
            weights += weight
    return -total / weights


def _ref_infonce(e: dict[str, list[list[float]]], a: str, b: str, scale: float) -> float:
    """Mean over j of -log softmax of anchor e_a^j over candidates e_b^k, at k = j."""
    n, total = len(e[a]), 0.0
    for j in range(n):
        denominator = sum(math.exp(_dot(e[a][j], e[b][k]) * scale) for k in range(n))
        total += math.log(math.exp(_dot(e[a][j], e[b][j]) * scale) / denominator)
    return -total / n


def ref_cl(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    e = _ref_embeddings(image, text)
    return (_ref_infonce(e, "i", "t", scale) + _ref_infonce(e, "t", "i", scale)) / 2


def ref_pairwise(image: torch.Tensor, text: torch.Tensor, scale: float, pair: torch.Tensor | None = None) -> float:
    e = _ref_embeddings(image, text, pair)
    return sum(_ref_infonce(e, a, b, scale) for a, b in ORDERED_PAIRS) / len(ORDERED_PAIRS)


REFERENCES = {"gcl": ref_gcl, "cl": ref_cl, "pairwise": ref_pairwise}


def _features(seed: int, n: int = 5, d: int = 8, *, normalized: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image, text = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) * 3  # (N, D) each
    if normalized:
        image, text = image / image.norm(dim=1, keepdim=True), text / text.norm(dim=1, keepdim=True)
    return image, text


# ---------------------------------------------------------------------------------------------
# Parity with the references


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07])
def test_matches_direct_reference(name: str, seed: int, normalized: bool, scale: float) -> None:
    image, text = _features(seed, normalized=normalized)
    got = create_loss(name)(image, text, torch.tensor(scale)).item()
    want = REFERENCES[name](image, text, scale)
    assert got == pytest.approx(want, rel=1e-5)


def test_float64_matches_reference_tightly() -> None:
    image, text = _features(3, n=4, d=6, normalized=False)
    got = GCLLoss()(image.double(), text.double(), torch.tensor(7.0, dtype=torch.float64)).item()
    assert got == pytest.approx(ref_gcl(image, text, 7.0), rel=1e-12)


def test_gcl_gradient_matches_finite_differences() -> None:
    image, text = (x.double().requires_grad_() for x in _features(4, n=3, d=4, normalized=False))
    scale = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(GCLLoss(), (image, text, scale))


# ---------------------------------------------------------------------------------------------
# Sanity


def test_aligned_features_reach_the_minimum() -> None:
    n, d = 4, 8
    image = text = torch.eye(n, d)  # (N, D): every modality of sample j is the same one-hot
    scale = torch.tensor(100.0)
    # GCL's two positives share one softmax, so its floor is log 2; the baselines' floor is 0.
    assert GCLLoss()(image, text, scale).item() == pytest.approx(math.log(2), abs=1e-6)
    assert CLLoss()(image, text, scale).item() == pytest.approx(0.0, abs=1e-6)
    assert PairwiseLoss()(image, text, scale).item() == pytest.approx(0.0, abs=1e-6)
    # ... and misaligned (shuffled) text pays for it.
    assert GCLLoss()(image, text.roll(1, 0), scale).item() > math.log(2) + 10


def ref_gcl_paper(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """The paper's formula as printed: the anchor's own term stays in its denominator."""
    e, n = _ref_embeddings(image, text), image.shape[0]
    total = 0.0
    for j in range(n):
        for a, b in ORDERED_PAIRS:
            denominator = sum(math.exp(_dot(e[a][j], e[m][k]) * scale) for m in MODALITIES for k in range(n))
            total += math.log(math.exp(_dot(e[a][j], e[b][j]) * scale) / denominator)
    return -total / (6 * n)


def test_gcl_masks_the_anchor_and_its_docstring_says_it_is_a_choice() -> None:
    image, text = _features(0, normalized=True)
    scale = 1 / 0.07
    got = GCLLoss()(image, text, torch.tensor(scale)).item()
    assert got == pytest.approx(ref_gcl(image, text, scale), rel=1e-5)  # the anchor masked
    assert got < ref_gcl_paper(image, text, scale) - 0.1  # not the formula as printed
    aligned = torch.eye(4, 8)
    assert ref_gcl_paper(aligned, aligned, 100.0) == pytest.approx(math.log(3), abs=1e-6)

    doc = " ".join(GCLLoss.__doc__.split())
    assert "the anchor itself included" in doc  # the paper's sum, stated as the paper's
    assert "a choice of ours and not the paper's formula" in doc and "Why:" in doc
    assert "3N - 1" in doc and "log 3" in doc


def test_gcl_differs_from_cl_and_pairwise() -> None:
    image, text = _features(0, normalized=True)
    scale = torch.tensor(10.0)
    gcl, cl, pairwise = (create_loss(name)(image, text, scale).item() for name in ("gcl", "cl", "pairwise"))
    assert abs(gcl - cl) > 1e-3 and abs(gcl - pairwise) > 1e-3 and abs(cl - pairwise) > 1e-3


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_reach_both_inputs_and_the_scale(name: str) -> None:
    image, text = (x.requires_grad_() for x in _features(0, normalized=False))
    log_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)  # what the model owns
    create_loss(name)(image, text, log_scale.exp()).backward()
    for grad in (image.grad, text.grad, log_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_plain_float_scale_is_accepted() -> None:
    image, text = _features(0, normalized=True)
    assert GCLLoss()(image, text, 3.0).item() == pytest.approx(
        GCLLoss()(image, text, torch.tensor(3.0)).item()
    )


def test_registry_and_errors_name_the_input() -> None:
    assert isinstance(create_loss("gcl"), GCLLoss)
    assert isinstance(create_loss("cl"), CLLoss)
    assert isinstance(create_loss("pairwise"), PairwiseLoss)
    with pytest.raises(ValueError, match="'clip'.*'cl', 'gcl', 'pairwise'"):
        create_loss("clip")
    with pytest.raises(ValueError, match=r"\(5, 8\).*\(4, 8\)"):
        GCLLoss()(torch.randn(5, 8), torch.randn(4, 8), torch.tensor(1.0))


# ---------------------------------------------------------------------------------------------
# Distributed: 2 CPU processes (gloo), each holding half of the global batch.

WORLD_SIZE = 2
GLOBAL_N, DIM, DDP_SCALE = 6, 8, 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        image, text = _features(7, n=GLOBAL_N, d=DIM, normalized=False)  # same global batch on every rank
        rows = slice(rank * GLOBAL_N // WORLD_SIZE, (rank + 1) * GLOBAL_N // WORLD_SIZE)
        results = {}
        for name in sorted(LOSSES):
            local_image = image[rows].clone().requires_grad_()
            local_text = text[rows].clone().requires_grad_()
            scale = torch.tensor(DDP_SCALE, requires_grad=True)
            loss = create_loss(name)(local_image, local_text, scale)
            loss.backward()
            results[name] = {
                "loss": loss.detach(),
                "image_grad": local_image.grad,
                "text_grad": local_text.grad,
                "scale_grad": scale.grad,
            }
        # GCL with another caption fused into the photo+note: three gathered inputs
        local_image, local_text = image[rows].clone().requires_grad_(), text[rows].clone().requires_grad_()
        local_pair = text.roll(1, 1)[rows].clone().requires_grad_()
        scale = torch.tensor(DDP_SCALE, requires_grad=True)
        loss = GCLLoss()(local_image, local_text, scale, local_pair)
        loss.backward()
        results["gcl+pair"] = {"loss": loss.detach(), "image_grad": local_image.grad, "text_grad": local_text.grad,
                               "pair_grad": local_pair.grad, "scale_grad": scale.grad}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gathered_loss_equals_single_process_loss(ddp_results: list[dict], name: str) -> None:
    image, text = (x.requires_grad_() for x in _features(7, n=GLOBAL_N, d=DIM, normalized=False))
    scale = torch.tensor(DDP_SCALE, requires_grad=True)
    loss = create_loss(name)(image, text, scale)
    loss.backward()
    n_local = GLOBAL_N // WORLD_SIZE
    for rank, results in enumerate(ddp_results):
        got = results[name]
        rows = slice(rank * n_local, (rank + 1) * n_local)
        # Every rank computes the full global loss ...
        torch.testing.assert_close(got["loss"], loss.detach(), atol=1e-6, rtol=0)
        # ... its local features get W x their slice of the single-process gradient ...
        torch.testing.assert_close(got["image_grad"], WORLD_SIZE * image.grad[rows], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got["text_grad"], WORLD_SIZE * text.grad[rows], atol=1e-6, rtol=1e-5)
        # ... and the (un-gathered) scale gets the single-process gradient, so DDP's mean over
        # ranks leaves every parameter with exactly the single-process gradient.
        torch.testing.assert_close(got["scale_grad"], scale.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("margin", [0.05, 0.3])
def test_the_modality_margin_matches_its_reference(margin: float) -> None:
    image, text = _features(3, normalized=False)
    got = create_loss("gcl", modality_margin=margin)(image.double(), text.double(), 1 / 0.07).item()
    assert got == pytest.approx(ref_gcl(image, text, 1 / 0.07, margin), rel=1e-9)
    assert got > GCLLoss()(image.double(), text.double(), 1 / 0.07).item()  # positives are cross-modal: harder
    with pytest.raises(ValueError, match="only the gcl loss"):
        create_loss("cl", modality_margin=margin)


@pytest.mark.parametrize("weight", [0.5, 3.0])
def test_the_text_photo_weight_matches_its_reference(weight: float) -> None:
    image, text = _features(3, normalized=False)
    pair = text.roll(1, 1)  # with another caption in the photo+note, as trained
    got = create_loss("gcl", text_photo_weight=weight, modality_margin=0.05)(image.double(), text.double(), 1 / 0.07,
                                                                             pair.double()).item()
    assert got == pytest.approx(ref_gcl(image, text, 1 / 0.07, 0.05, pair, weight), rel=1e-9)
    assert got != pytest.approx(ref_gcl(image, text, 1 / 0.07, 0.05, pair), rel=1e-3)  # the weight does something
    with pytest.raises(ValueError, match="only the gcl loss"):
        create_loss("pairwise", text_photo_weight=weight)
    with pytest.raises(ValueError, match="above 0"):
        create_loss("gcl", text_photo_weight=0)


def test_gathered_loss_with_a_pair_caption_equals_single_process_loss(ddp_results: list[dict]) -> None:
    image, text = (x.requires_grad_() for x in _features(7, n=GLOBAL_N, d=DIM, normalized=False))
    pair = text.detach().roll(1, 1).requires_grad_()
    scale = torch.tensor(DDP_SCALE, requires_grad=True)
    loss = GCLLoss()(image, text, scale, pair)
    loss.backward()
    n_local = GLOBAL_N // WORLD_SIZE
    for rank, results in enumerate(ddp_results):
        got, rows = results["gcl+pair"], slice(rank * n_local, (rank + 1) * n_local)
        torch.testing.assert_close(got["loss"], loss.detach(), atol=1e-6, rtol=0)
        for key, x in (("image_grad", image), ("text_grad", text), ("pair_grad", pair)):
            torch.testing.assert_close(got[key], WORLD_SIZE * x.grad[rows], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got["scale_grad"], scale.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["gcl", "pairwise"])
def test_another_caption_in_the_photo_note_matches_its_reference(name: str) -> None:
    image, text = _features(5, normalized=False)
    pair = _features(6, normalized=False)[1]  # another caption's features for each sample
    got = create_loss(name)(image.double(), text.double(), 1 / 0.07, pair.double()).item()
    assert got == pytest.approx(REFERENCES[name](image, text, 1 / 0.07, pair=pair), rel=1e-9)
    assert got != pytest.approx(create_loss(name)(image.double(), text.double(), 1 / 0.07).item(), rel=1e-3)
    # the sample's own caption as the pair caption is the plain loss
    same = create_loss(name)(image.double(), text.double(), 1 / 0.07, text.double()).item()
    assert same == pytest.approx(create_loss(name)(image.double(), text.double(), 1 / 0.07).item(), rel=1e-12)
    with pytest.raises(ValueError, match=r"pair_text_features \(4, 8\)"):
        create_loss(name)(image, text, 1.0, pair[:4])


def test_cl_has_no_photo_note_and_ignores_a_pair_caption() -> None:
    image, text = _features(5, normalized=False)
    pair = _features(6, normalized=False)[1]
    assert CLLoss()(image, text, 3.0, pair).item() == CLLoss()(image, text, 3.0).item()

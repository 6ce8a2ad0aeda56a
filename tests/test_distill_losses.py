import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minime.distill.losses import (
    cross_entropy,
    dense_kd_loss,
    divergence,
    sparse_kd_loss,
    uld_loss,
)

B, T, V = 2, 5, 11
KD_KINDS = ["forward_kl", "reverse_kl", "jsd"]


def np_kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in float64, 0 * log 0 = 0."""
    keep = p > 0
    return float(np.sum(p[keep] * np.log(p[keep] / q[keep])))


def np_divergence(teacher: np.ndarray, student: np.ndarray, kind: str, beta: float) -> float:
    if kind == "forward_kl":
        return np_kl(teacher, student)
    if kind == "reverse_kl":
        return np_kl(student, teacher)
    m = beta * teacher + (1 - beta) * student
    return beta * np_kl(teacher, m) + (1 - beta) * np_kl(student, m)


def logp(*probs: float) -> torch.Tensor:
    """Log-probs of one position, shape (1, 1, n); zero probabilities become -inf."""
    return torch.tensor(probs, dtype=torch.float64).log().float().view(1, 1, -1)


def softmax64(logits: torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(logits.double() / temperature, dim=-1).numpy()


def random_logits(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def full_top_k(teacher_logits: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's whole distribution as a 'top-k' with K = vocab, in a shuffled id order."""
    noise = torch.rand(teacher_logits.shape, generator=torch.Generator().manual_seed(seed))
    ids = noise.argsort(dim=-1)
    return ids, F.log_softmax(teacher_logits, dim=-1).gather(-1, ids)


ALL = torch.ones(B, T, dtype=torch.bool)


# divergence


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize(
    ("teacher", "student"),
    [
        ((0.5, 0.3, 0.2), (0.25, 0.25, 0.5)),
        ((0.7, 0.3, 0.0), (0.5, 0.5, 0.0)),
        ((0.9, 0.1), (0.6, 0.4)),
    ],
)
def test_divergence_matches_numpy_on_small_distributions(kind, teacher, student):
    for beta in (0.5, 0.3):
        got = divergence(logp(*teacher), logp(*student), kind, beta)
        want = np_divergence(np.array(teacher), np.array(student), kind, beta)
        assert got.shape == (1, 1)
        assert got.item() == pytest.approx(want, abs=1e-6)


def test_divergence_hand_values():
    assert divergence(logp(1, 0), logp(0.5, 0.5), "forward_kl", 0.5).item() == pytest.approx(
        math.log(2)
    )
    assert divergence(logp(0.5, 0.5), logp(1, 0), "reverse_kl", 0.5).item() == pytest.approx(
        math.log(2)
    )
    # Disjoint supports reach the JSD bound log 2.
    assert divergence(logp(1, 0), logp(0, 1), "jsd", 0.5).item() == pytest.approx(math.log(2))
    # forward_kl(0.5/0.5 teacher, 0.75/0.25 student) = 0.5 log(0.5/0.75) + 0.5 log(0.5/0.25)
    want = 0.5 * math.log(2 / 3) + 0.5 * math.log(2)
    got = divergence(logp(0.5, 0.5), logp(0.75, 0.25), "forward_kl", 0.5)
    assert got.item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_divergence_is_zero_for_equal_distributions(kind):
    same = F.log_softmax(random_logits(0, B, T, V), dim=-1)
    same[..., 3] = -math.inf
    same = same - same.logsumexp(-1, keepdim=True)
    got = divergence(same, same.clone(), kind, 0.4)
    assert torch.allclose(got, torch.zeros(B, T), atol=1e-6)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_divergence_gradients_are_finite_where_both_have_zero_probability(kind):
    teacher = logp(0.6, 0.0, 0.4)
    student = logp(0.3, 0.0, 0.7).requires_grad_()
    divergence(teacher, student, kind, 0.5).sum().backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad[..., 1].item() == 0


def test_jsd_is_symmetric_at_half_and_bounded_by_log_2():
    a = F.log_softmax(random_logits(1, 64, T, V) * 3, dim=-1)
    b = F.log_softmax(random_logits(2, 64, T, V) * 3, dim=-1)
    ab, ba = divergence(a, b, "jsd", 0.5), divergence(b, a, "jsd", 0.5)
    assert torch.allclose(ab, ba, atol=1e-6)
    assert (ab >= -1e-6).all()
    assert (ab <= math.log(2) + 1e-6).all()
    # ... and not symmetric away from 0.5.
    assert not torch.allclose(divergence(a, b, "jsd", 0.2), divergence(b, a, "jsd", 0.2))


def test_divergence_rejects_unknown_kind_and_bad_beta():
    a = logp(0.5, 0.5)
    with pytest.raises(ValueError, match="kind"):
        divergence(a, a, "kl", 0.5)
    for beta in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="beta"):
            divergence(a, a, "jsd", beta)
    # beta only matters to jsd.
    assert divergence(a, a, "forward_kl", 2.0).item() == 0


# cross_entropy


def test_cross_entropy_matches_torch_with_ignore_index():
    logits = random_logits(3, B, T, V)
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(4))
    labels[0, :2] = -100
    labels[1, 4] = -100
    want = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100)
    assert cross_entropy(logits, labels).item() == pytest.approx(want.item(), abs=1e-6)
    # bf16 logits are computed in float32.
    got = cross_entropy(logits.bfloat16(), labels)
    want = F.cross_entropy(logits.bfloat16().float().view(-1, V), labels.view(-1))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), abs=1e-5)


# dense_kd_loss


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_dense_kd_matches_numpy_masked_mean_with_t_squared(kind, temperature):
    student, teacher = random_logits(5, B, T, V), random_logits(6, B, T, V)
    mask = ALL.clone()
    mask[0, 1] = mask[1, 3] = mask[1, 4] = False
    got = dense_kd_loss(student, teacher, mask, kind=kind, beta=0.3, temperature=temperature)
    ps, pt = softmax64(student, temperature), softmax64(teacher, temperature)
    per_position = [
        np_divergence(pt[b, t], ps[b, t], kind, 0.3) for b, t in mask.nonzero().tolist()
    ]
    assert got.item() == pytest.approx(temperature**2 * np.mean(per_position), rel=1e-5)


def test_dense_kd_trims_padded_vocabulary():
    student, teacher = random_logits(7, B, T, V), random_logits(8, B, T, V)
    padded = torch.cat([teacher, torch.full((B, T, 3), 1e4)], dim=-1)
    for kind in KD_KINDS:
        want = dense_kd_loss(student, teacher, ALL, kind=kind)
        assert dense_kd_loss(student, padded, ALL, kind=kind).item() == pytest.approx(want.item())
        # The student's vocabulary may be the padded one, too.
        padded_student = torch.cat([student, torch.full((B, T, 3), 1e4)], dim=-1)
        got = dense_kd_loss(padded_student, teacher, ALL, kind=kind)
        assert got.item() == pytest.approx(want.item())


# sparse_kd_loss


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_with_whole_vocabulary_equals_dense(kind, temperature):
    student, teacher = random_logits(9, B, T, V), random_logits(10, B, T, V)
    ids, top = full_top_k(teacher, seed=11)
    sparse = sparse_kd_loss(student, ids, top, ALL, kind=kind, temperature=temperature)
    dense = dense_kd_loss(student, teacher, ALL, kind=kind, temperature=temperature)
    assert sparse.item() == pytest.approx(dense.item(), abs=1e-5)


# One position, vocab 6: the teacher keeps 0.4, 0.2, 0.1 on ids 2, 0, 4, leaving 0.3 in the tail.
TAIL_IDS, TAIL_PROBS = [2, 0, 4], [0.4, 0.2, 0.1]


def tail_reference(student: torch.Tensor, kind: str, temperature: float) -> float:
    """The K + 1 bucket divergence by hand: teacher tail 0.3, tempered as one token."""
    teacher = np.array([*TAIL_PROBS, 0.3]) ** (1 / temperature)
    teacher /= teacher.sum()
    q = softmax64(student, temperature).reshape(-1)
    buckets = np.array([*q[TAIL_IDS], 1 - q[TAIL_IDS].sum()])
    return temperature**2 * np_divergence(teacher, buckets, kind, 0.5)


def sparse_one(student, ids, probs, kind="forward_kl", temperature=1.0):
    top = torch.tensor(probs, dtype=torch.float64).log().float().view(1, 1, -1)
    ids = torch.tensor(ids).view(1, 1, -1)
    mask = torch.ones(1, 1, dtype=torch.bool)
    return sparse_kd_loss(student, ids, top, mask, kind=kind, temperature=temperature).item()


@pytest.mark.parametrize("kind", KD_KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_tail_bucket_matches_hand_computation(kind, temperature):
    student = random_logits(12, 1, 1, 6)
    got = sparse_one(student, TAIL_IDS, TAIL_PROBS, kind, temperature)
    assert got == pytest.approx(tail_reference(student, kind, temperature), rel=1e-5)


@pytest.mark.parametrize("kind", KD_KINDS)
def test_sparse_out_of_vocabulary_ids_and_padding_slots_go_to_the_tail(kind):
    student = random_logits(13, 1, 1, 6)
    want = tail_reference(student, kind, 1.0)
    # Id 9 is beyond the student's vocabulary of 6: its 0.15 joins the tail's other 0.15.
    assert sparse_one(student, [*TAIL_IDS, 9], [*TAIL_PROBS, 0.15], kind) == pytest.approx(
        want, rel=1e-5
    )
    # A padding slot (-inf) with id 0, which is also a real id, changes nothing.
    assert sparse_one(student, [*TAIL_IDS, 0], [*TAIL_PROBS, 0.0], kind) == pytest.approx(
        want, rel=1e-5
    )
    assert sparse_one(student, [0, *TAIL_IDS, 0], [0.0, *TAIL_PROBS, 0.0], kind) == pytest.approx(
        want, rel=1e-5
    )


# Gradients


def peaked_teacher(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits with one clear favourite per position, and that favourite's id."""
    teacher = random_logits(seed, B, T, V)
    top1 = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed + 1))
    teacher.scatter_(-1, top1.unsqueeze(-1), 8.0)
    return teacher, top1


def kd_losses(teacher: torch.Tensor, k: int):
    """(name, loss(student_logits, mask)) for every KD loss against the same teacher."""
    ids, top = full_top_k(teacher, seed=20)
    order = top.argsort(dim=-1, descending=True)[..., :k]
    ids, top = ids.gather(-1, order), top.gather(-1, order)
    for kind in KD_KINDS:
        for temperature in (1.0, 2.0):
            yield (
                f"sparse-{kind}-T{temperature}",
                lambda s, m, kind=kind, t=temperature: sparse_kd_loss(
                    s, ids, top, m, kind=kind, temperature=t
                ),
            )
            yield (
                f"dense-{kind}-T{temperature}",
                lambda s, m, kind=kind, t=temperature: dense_kd_loss(
                    s, teacher, m, kind=kind, temperature=t
                ),
            )


def test_sgd_step_lowers_every_kd_loss_and_raises_the_teacher_favourite():
    teacher, top1 = peaked_teacher(21)
    # A fairly flat student: reverse KL is mode-seeking, so from a student confident elsewhere it
    # may first grow another of the teacher's ids.
    start = random_logits(22, B, T, V) / 4
    for name, loss_fn in kd_losses(teacher, k=4):
        student = start.clone().requires_grad_()
        loss = loss_fn(student, ALL)
        loss.backward()
        stepped = (student - 1.0 * student.grad).detach()
        assert loss_fn(stepped, ALL).item() < loss.item(), name
        before = torch.softmax(start, -1).gather(-1, top1.unsqueeze(-1))
        after = torch.softmax(stepped, -1).gather(-1, top1.unsqueeze(-1))
        assert (after > before).all(), name


def test_masked_positions_get_no_gradient():
    teacher, _ = peaked_teacher(23)
    mask = ALL.clone()
    mask[0, 2] = mask[1, 0] = False
    labels = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(24))
    labels[~mask] = -100
    losses = [
        *kd_losses(teacher, k=4),
        ("ce", lambda s, m: cross_entropy(s, labels)),
        ("uld", lambda s, m: uld_loss(s, F.log_softmax(teacher, -1)[..., :4], m)),
    ]
    for name, loss_fn in losses:
        student = random_logits(25, B, T, V).requires_grad_()
        loss_fn(student, mask).backward()
        assert (student.grad[~mask] == 0).all(), name
        assert (student.grad[mask].abs().sum(-1) > 0).all(), name


@pytest.mark.parametrize("kind", KD_KINDS)
def test_no_nan_gradients_with_infinite_teacher_entries(kind):
    student = random_logits(26, B, T, V).requires_grad_()
    ids, top = full_top_k(random_logits(27, B, T, V), seed=28)
    ids, top = ids[..., :6].clone(), top[..., :6].clone()
    top[..., 4:] = -math.inf  # padding slots
    top[0, 0] = -math.inf  # a position that is all padding
    ids[1, 1, 5] = V + 2  # a padding slot with an out-of-vocabulary id
    mask = ALL.clone()
    mask[1, 2] = False
    for temperature in (1.0, 2.0):
        loss = sparse_kd_loss(student, ids, top, mask, kind=kind, temperature=temperature)
        loss = loss + uld_loss(student, top, mask, temperature=temperature)
        if kind != "reverse_kl":  # reverse KL against a zero-probability teacher id is infinite
            teacher = random_logits(29, B, T, V)
            teacher[..., :3] = -math.inf
            loss = loss + dense_kd_loss(student, teacher, mask, kind=kind)
        student.grad = None
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(student.grad).all()


# uld_loss


def test_uld_is_zero_for_a_permutation_of_the_same_distribution():
    student = random_logits(30, B, T, V)
    k = 4
    sorted_top = torch.softmax(student, -1).topk(k, dim=-1).values
    # The teacher's slots in another order; the ids (not given to ULD) could be anything.
    shuffle = torch.rand(B, T, k, generator=torch.Generator().manual_seed(31)).argsort(-1)
    teacher = sorted_top.gather(-1, shuffle).log()
    assert uld_loss(student, teacher, ALL).item() == pytest.approx(0, abs=1e-6)
    # A student whose logits are permuted over the vocabulary costs the same: nothing.
    permuted = student[..., torch.randperm(V, generator=torch.Generator().manual_seed(32))]
    assert uld_loss(permuted, teacher, ALL).item() == pytest.approx(0, abs=1e-6)
    other = random_logits(33, B, T, V)
    assert uld_loss(other, teacher, ALL).item() > 0.01


def test_uld_hand_value_with_padding():
    # Student probabilities 0.6, 0.25, 0.15 (in vocab order 0.25, 0.6, 0.15).
    student = torch.tensor([0.25, 0.6, 0.15]).log().view(1, 1, 3)
    teacher = torch.tensor([0.3, 0.5, 0.0]).log().view(1, 1, 3)  # last slot is padding
    mask = torch.ones(1, 1, dtype=torch.bool)
    want = abs(0.6 - 0.5) + abs(0.25 - 0.3) + abs(0.15 - 0.0)
    assert uld_loss(student, teacher, mask).item() == pytest.approx(want, abs=1e-6)
    # Only the first K = 2 sorted entries count: the student's 0.15 is beyond them.
    assert uld_loss(student, teacher[..., :2], mask).item() == pytest.approx(0.15, abs=1e-6)


def test_uld_temperature_softens_both_sides():
    student = random_logits(37, 1, 1, 6)
    teacher = torch.tensor([0.3, 0.5]).log().view(1, 1, 2)  # 0.2 left in the tail
    mask = torch.ones(1, 1, dtype=torch.bool)
    soft_teacher = np.sqrt([0.5, 0.3, 0.2])
    soft_teacher = soft_teacher[:2] / soft_teacher.sum()
    soft_student = np.sort(softmax64(student, 2.0).reshape(-1))[::-1][:2]
    want = np.abs(soft_student - soft_teacher).sum()
    got = uld_loss(student, teacher, mask, temperature=2.0)
    assert got.item() == pytest.approx(want, abs=1e-6)


# Empty masks


def test_empty_mask_returns_zero_and_backward_works():
    teacher = random_logits(34, B, T, V)
    ids, top = full_top_k(teacher, seed=35)
    none = torch.zeros(B, T, dtype=torch.bool)
    losses = {
        "ce": lambda s: cross_entropy(s, torch.full((B, T), -100)),
        "sparse": lambda s: sparse_kd_loss(s, ids[..., :3], top[..., :3], none, kind="jsd"),
        "dense": lambda s: dense_kd_loss(s, teacher, none, temperature=2.0),
        "uld": lambda s: uld_loss(s, top[..., :3], none),
    }
    for name, loss_fn in losses.items():
        student = random_logits(36, B, T, V).requires_grad_()
        loss = loss_fn(student)
        loss.backward()
        assert loss.shape == () and loss.item() == 0, name
        assert (student.grad == 0).all(), name

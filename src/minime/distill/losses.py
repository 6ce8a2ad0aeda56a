"""Distillation losses: cross-entropy, KL / JSD on sparse or dense teacher outputs, and ULD.

Conventions shared by every function here:

- Every per-position tensor is already aligned with the student logits position that predicts
  the target (callers shift), shape (B, T, ...).
- `mask` is a bool (B, T) tensor of the positions that count.
- Each loss returns the mean over counted positions as a scalar tensor; with no counted position
  it returns a zero that is still attached to the graph, so `backward()` works.
- Everything is computed in float32, whatever the dtype of the logits.
- Teacher inputs are constants: they are detached.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

KINDS = ("forward_kl", "reverse_kl", "jsd")
IGNORE_INDEX = -100

# The smallest tail mass of a sparse distribution. Float32 sums of probabilities carry errors of
# about 1e-7, so a teacher tail below this is noise (which a temperature would amplify) and counts
# as empty; after the temperature, teacher and student tails are floored here, which keeps
# log(tail) finite (reverse KL, gradients) and makes two near-empty tails cost nothing.
TAIL_FLOOR = 1e-6
_LOG_FLOOR = math.log(TAIL_FLOOR)
_MAX_KEPT = math.log1p(-TAIL_FLOOR)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` (B, T) over the True positions of `mask`; a graph-attached 0 if none."""
    mask = mask.to(device=values.device, dtype=torch.bool)
    total = torch.where(mask, values, 0.0).sum()
    return total / mask.sum().clamp(min=1)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _safe_logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`logaddexp` that gives -inf (and zero gradients, not NaN) where both inputs are -inf."""
    both = torch.isneginf(a) & torch.isneginf(b)
    out = torch.logaddexp(a.masked_fill(both, 0.0), b.masked_fill(both, 0.0))
    return out.masked_fill(both, -math.inf)


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) summed over the last dim, with 0 * log 0 = 0 in values and gradients."""
    p = logp.exp()
    keep = p > 0
    diff = torch.where(keep, logp, 0.0) - torch.where(keep, logq, 0.0)
    return torch.where(keep, p * diff, 0.0).sum(-1)


def divergence(
    teacher_logp: torch.Tensor, student_logp: torch.Tensor, kind: str, beta: float
) -> torch.Tensor:
    """Per-position divergence between two log-probability tensors over the same last-dim buckets.

    `kind` is "forward_kl" (KL(teacher || student)), "reverse_kl" (KL(student || teacher)) or
    "jsd": the generalised Jensen-Shannon divergence with M = beta * P_teacher + (1 - beta) *
    P_student and loss = beta * KL(P_teacher || M) + (1 - beta) * KL(P_student || M), beta in
    (0, 1); `beta` is ignored by the other kinds. Inputs may hold -inf (zero probability).
    Returns the last dim summed away, shape (B, T).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown divergence kind {kind!r}; expected one of {KINDS}")
    teacher_logp, student_logp = teacher_logp.float(), student_logp.float()
    if kind == "forward_kl":
        return _kl(teacher_logp, student_logp)
    if kind == "reverse_kl":
        return _kl(student_logp, teacher_logp)
    if not 0 < beta < 1:
        raise ValueError(f"jsd needs beta in (0, 1), got {beta}")
    log_m = _safe_logaddexp(teacher_logp + math.log(beta), student_logp + math.log1p(-beta))
    return beta * _kl(teacher_logp, log_m) + (1 - beta) * _kl(student_logp, log_m)


def cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labels that are not -100."""
    logits = student_logits.float()
    per_position = F.cross_entropy(
        logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(labels.shape)
    return _masked_mean(per_position, labels != IGNORE_INDEX)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - e^x) for x < 0: log(-expm1(x)) is accurate near 0, log1p(-e^x) far from it."""
    near_zero = x > -math.log(2)
    return torch.where(
        near_zero,
        torch.log(-torch.expm1(x.clamp(min=-math.log(2)))),
        torch.log1p(-torch.exp(x.clamp(max=-math.log(2)))),
    )


def _teacher_buckets(
    top_logprobs: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The teacher's K + 1 bucket log-probs: its valid top-k slots, then the tail.

    Invalid slots are -inf and their mass is in the tail (1 - the valid mass; below TAIL_FLOOR
    it counts as 0). The buckets are divided by the temperature and renormalised over the K + 1
    buckets, which treats the tail as a single token: an approximation, since the tail's own
    tokens would each be sharpened or flattened. The tail is then floored at TAIL_FLOOR.
    """
    kept = torch.where(valid, top_logprobs.detach().float(), -math.inf)
    log_kept = torch.logsumexp(kept, dim=-1, keepdim=True)
    tail = torch.where(log_kept < _MAX_KEPT, _log1mexp(log_kept.clamp(max=_MAX_KEPT)), -math.inf)
    buckets = F.log_softmax(torch.cat([kept, tail], dim=-1) / temperature, dim=-1)
    return torch.cat([buckets[..., :-1], buckets[..., -1:].clamp(min=_LOG_FLOOR)], dim=-1)


def sparse_kd_loss(
    student_logits: torch.Tensor,
    top_ids: torch.Tensor,
    top_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Distil from the teacher's stored top-k log-probs over K + 1 buckets.

    The buckets are the K teacher ids plus a tail holding the rest of the mass (teacher:
    1 - sum of its top-k probabilities; student: 1 - its probability on those ids, in log space).
    Padding slots (log-prob -inf) are ignored, and ids the student's vocabulary lacks (a
    teacher's padded vocabulary) have zero student probability, their teacher mass moving to the
    tail. Ids must be unique per position. Both tails are floored at TAIL_FLOOR. With a
    temperature T the student's log-probs come from logits / T, the teacher's buckets are
    divided by T and renormalised over the K + 1 buckets (treating the tail as one token, an
    approximation), and the loss is multiplied by T**2.
    """
    _check_temperature(temperature)
    vocab = student_logits.shape[-1]
    valid = (top_ids >= 0) & (top_ids < vocab) & (top_logprobs > -math.inf)
    teacher = _teacher_buckets(top_logprobs, valid, temperature)

    student_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    picked = student_logp.gather(-1, top_ids.clamp(0, vocab - 1))
    picked = torch.where(valid, picked, -math.inf)
    # The student's tail, 1 - its mass on the valid ids, floored at TAIL_FLOOR.
    log_kept = torch.logsumexp(picked, dim=-1, keepdim=True).clamp(max=_MAX_KEPT)
    student = torch.cat([picked, _log1mexp(log_kept)], dim=-1)

    loss = _masked_mean(divergence(teacher, student, kind, beta), mask)
    return loss * temperature**2


def dense_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Distil from the teacher's full logits, both softened by the temperature (loss * T**2).

    When the vocabularies differ in size (padding ids at the end of one), both are trimmed to
    the smaller before the softmax.
    """
    _check_temperature(temperature)
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    student = F.log_softmax(student_logits[..., :vocab].float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits[..., :vocab].detach().float() / temperature, dim=-1)
    loss = _masked_mean(divergence(teacher, student, kind, beta), mask)
    return loss * temperature**2


def uld_loss(
    student_logits: torch.Tensor,
    teacher_top_logprobs: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Universal Logit Distillation (Boizard et al. 2024), for teachers with another tokenizer.

    Ids are not compared, only the shapes of the distributions: per position, the L1 distance
    sum_k |p_student_sorted_k - p_teacher_sorted_k| between the K largest student probabilities
    (softmax of logits / T) and the teacher's K top-k probabilities (padding -inf counts as 0),
    each sorted descending, K being the teacher's last dim. As in the paper's top-k variant the
    mass beyond the first K sorted entries is ignored. With T != 1 the teacher's probabilities
    are softened like `sparse_kd_loss`'s buckets (tail as one token), so the temperature acts on
    both sides, not on the student's alone.
    """
    _check_temperature(temperature)
    k = teacher_top_logprobs.shape[-1]
    valid = teacher_top_logprobs > -math.inf
    teacher = _teacher_buckets(teacher_top_logprobs, valid, temperature)[..., :k].exp()
    teacher = teacher.sort(dim=-1, descending=True).values

    student = F.softmax(student_logits.float() / temperature, dim=-1)
    student = student.topk(min(k, student.shape[-1]), dim=-1).values
    student = F.pad(student, (0, k - student.shape[-1]))

    return _masked_mean((student - teacher).abs().sum(-1), mask)

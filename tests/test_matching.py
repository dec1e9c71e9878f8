"""Entropic OT between ink tokens: a real coupling, the right optimum, stable gradients.

Tolerances: marginals are met to 1e-4 in total variation (the model's eval
setting converges to ~1e-6 on random costs); the small-epsilon optimum
matches the exact assignment to 2.5e-3 (the entropic bias is bounded by
epsilon * log n = 0.016 for n = 25; measured < 1e-3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from dsn.model.detailsemnet import DetailSemNetConfig
from dsn.model.matching import cosine_cost, sinkhorn

EVAL = DetailSemNetConfig()
MARGINAL_TOL = 1e-4


def iterations_for(epsilon: float, cost_range: float = 2.0) -> int:
    """Enough iterations for these tests: Sinkhorn converges more slowly as epsilon shrinks."""
    return int(min(2000, max(50, math.ceil(8 * cost_range / epsilon))))


pytestmark = pytest.mark.usefixtures("one_thread")


def random_tokens(batch: int, n: int, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, n, dim, generator=torch.Generator().manual_seed(seed))


def random_masks(batch: int, n: int, seed: int) -> torch.Tensor:
    """Masks with a different number of valid tokens per row (at least one)."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, n, generator=generator) < torch.linspace(0.15, 0.9, batch)[:, None]
    mask[torch.arange(batch), torch.randint(0, n, (batch,), generator=generator)] = True
    return mask


@pytest.mark.parametrize("epsilon", [EVAL.epsilon_eval, EVAL.epsilon_train])
def test_plan_is_a_coupling_of_the_valid_tokens(epsilon: float) -> None:
    a, b = random_tokens(6, 49, seed=1), random_tokens(6, 49, seed=2)
    mask_a, mask_b = random_masks(6, 49, seed=3), random_masks(6, 49, seed=4)
    t = sinkhorn(cosine_cost(a, b), mask_a, mask_b, epsilon=epsilon, iterations=EVAL.sinkhorn_iterations)

    assert (t.plan >= 0).all()
    assert (t.plan[~(mask_a[:, :, None] & mask_b[:, None, :])] == 0).all(), "masked tokens must carry no mass"
    rows = t.plan.sum(2)
    cols = t.plan.sum(1)
    for i in range(6):
        na, nb = int(mask_a[i].sum()), int(mask_b[i].sum())
        assert torch.allclose(rows[i][mask_a[i]], torch.full((na,), 1 / na), atol=MARGINAL_TOL)
        assert torch.allclose(cols[i][mask_b[i]], torch.full((nb,), 1 / nb), atol=MARGINAL_TOL)
    assert torch.allclose(t.plan.sum((1, 2)), torch.ones(6), atol=MARGINAL_TOL)
    assert (t.marginal_error < MARGINAL_TOL).all()
    assert torch.allclose(t.distance, (t.plan * t.cost).sum((1, 2)))


def test_permuting_query_tokens_permutes_plan_columns() -> None:
    a, b = random_tokens(3, 20, seed=5), random_tokens(3, 20, seed=6)
    mask_a, mask_b = random_masks(3, 20, seed=7), random_masks(3, 20, seed=8)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(9))

    base = sinkhorn(cosine_cost(a, b), mask_a, mask_b, epsilon=EVAL.epsilon_eval, iterations=EVAL.sinkhorn_iterations)
    permuted = sinkhorn(cosine_cost(a, b[:, perm]), mask_a, mask_b[:, perm], epsilon=EVAL.epsilon_eval, iterations=EVAL.sinkhorn_iterations)

    assert torch.allclose(permuted.plan, base.plan[:, :, perm], atol=1e-6)
    assert torch.allclose(permuted.distance, base.distance, atol=1e-6)


def test_identical_token_sets_are_at_distance_zero() -> None:
    a = random_tokens(2, 30, dim=32, seed=10)
    t = sinkhorn(cosine_cost(a, a), epsilon=0.01, iterations=iterations_for(0.01))
    assert (t.distance < 1e-3).all(), t.distance
    assert torch.allclose(torch.diagonal(t.plan, dim1=1, dim2=2), torch.full((2, 30), 1 / 30), atol=1e-3)


@pytest.mark.parametrize("n", [5, 12, 25])
def test_small_epsilon_recovers_the_exact_assignment(n: int) -> None:
    epsilon = 0.005
    a, b = random_tokens(4, n, seed=n), random_tokens(4, n, seed=100 + n)
    cost = cosine_cost(a, b)
    t = sinkhorn(cost, epsilon=epsilon, iterations=iterations_for(epsilon))
    for i in range(4):
        rows, cols = linear_sum_assignment(cost[i].double().numpy())
        exact = float(cost[i].double().numpy()[rows, cols].sum()) / n
        assert t.distance[i].item() == pytest.approx(exact, abs=2.5e-3)
        assert t.distance[i].item() >= exact - 1e-4, "no coupling can beat the optimal assignment"


def test_masked_batch_equals_each_pair_alone() -> None:
    """Padding tokens are garbage on purpose: they must not move any plan or distance."""
    a, b = random_tokens(5, 49, seed=11) * 3, random_tokens(5, 49, seed=12) * 3
    mask_a, mask_b = random_masks(5, 49, seed=13), random_masks(5, 49, seed=14)
    assert len({int(m.sum()) for m in mask_a}) > 1, "the batch must mix pairs of different sizes"
    batched = sinkhorn(cosine_cost(a, b), mask_a, mask_b, epsilon=EVAL.epsilon_eval, iterations=EVAL.sinkhorn_iterations)
    for i in range(5):
        alone = sinkhorn(
            cosine_cost(a[i : i + 1, mask_a[i]], b[i : i + 1, mask_b[i]]), epsilon=EVAL.epsilon_eval, iterations=EVAL.sinkhorn_iterations
        )
        assert torch.allclose(batched.plan[i][mask_a[i]][:, mask_b[i]], alone.plan[0], atol=1e-7)
        assert batched.distance[i].item() == pytest.approx(alone.distance[0].item(), abs=1e-6)


@pytest.mark.parametrize("unroll", [False, True])
def test_gradients_are_finite_with_empty_and_single_token_rows(unroll: bool) -> None:
    a = random_tokens(4, 10, seed=15).requires_grad_()
    b = random_tokens(4, 10, seed=16).requires_grad_()
    mask_a = torch.ones(4, 10, dtype=torch.bool)
    mask_b = torch.ones(4, 10, dtype=torch.bool)
    mask_a[0] = False  # no reference token at all
    mask_b[1] = False  # no query token at all
    mask_a[2] = False
    mask_a[2, 3] = True  # a single reference token
    mask_a[3], mask_b[3] = False, False
    mask_a[3, 0], mask_b[3, 9] = True, True  # one token each side
    t = sinkhorn(cosine_cost(a, b), mask_a, mask_b, epsilon=EVAL.epsilon_train, iterations=50, unroll=unroll)
    t.distance.sum().backward()

    assert torch.isfinite(t.distance).all() and torch.isfinite(t.plan).all()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert t.distance[0] == 0 and t.distance[1] == 0, "an empty side transports nothing"
    assert t.plan[2].sum().item() == pytest.approx(1.0, abs=1e-5), "a single token sends all mass"
    assert t.plan[3, 0, 9].item() == pytest.approx(1.0, abs=1e-6)
    assert a.grad[2].abs().sum() > 0 and a.grad[3].abs().sum() > 0, "single tokens must still learn"


def _regularised_value(t, epsilon: float, mask_a: torch.Tensor, mask_b: torch.Tensor) -> torch.Tensor:
    """<P, C> + epsilon * KL(P || a b^T): the function whose gradient the envelope theorem gives."""
    na, nb = mask_a.sum(1, keepdim=True).float(), mask_b.sum(1, keepdim=True).float()
    product = (1 / na)[:, :, None] * (1 / nb)[:, None, :] * (mask_a[:, :, None] & mask_b[:, None, :])
    valid = t.plan > 0
    plan = torch.where(valid, t.plan, 1.0)
    kl = torch.where(valid, t.plan * (torch.log(plan) - torch.log(torch.where(valid, product, 1.0))), 0.0)
    return (t.plan * t.cost).sum((1, 2)) + epsilon * kl.sum((1, 2))


def test_envelope_gradient_is_the_gradient_of_the_regularised_value() -> None:
    epsilon, iterations = EVAL.epsilon_train, 400
    cost = cosine_cost(random_tokens(3, 15, seed=17), random_tokens(3, 15, seed=18)).detach()
    mask_a, mask_b = random_masks(3, 15, seed=19), random_masks(3, 15, seed=20)

    envelope_cost = cost.clone().requires_grad_()
    sinkhorn(envelope_cost, mask_a, mask_b, epsilon=epsilon, iterations=iterations).distance.sum().backward()
    unrolled_cost = cost.clone().requires_grad_()
    t = sinkhorn(unrolled_cost, mask_a, mask_b, epsilon=epsilon, iterations=iterations, unroll=True)
    _regularised_value(t, epsilon, mask_a, mask_b).sum().backward()

    assert torch.allclose(envelope_cost.grad, unrolled_cost.grad, atol=1e-4)


def test_envelope_gradient_points_like_the_unrolled_distance_gradient() -> None:
    """The envelope gradient belongs to the regularised value, not to <P, C> itself.

    So the two differ at any epsilon > 0. Measured on random 20-token sets
    (three seeds): cosine similarity of the token gradients 0.95 at epsilon
    0.1, 0.96 at 0.05, 0.98 at 0.01, while the envelope gradient's norm is
    only 0.65 / 0.75 / 0.90 of the unrolled one. We require the direction.
    """
    a = random_tokens(4, 20, seed=21)
    b = random_tokens(4, 20, seed=22)
    for epsilon, floor in [(EVAL.epsilon_train, 0.9), (EVAL.epsilon_eval, 0.9)]:
        grads = []
        for unroll in (False, True):
            tokens = a.clone().requires_grad_()
            sinkhorn(cosine_cost(tokens, b), epsilon=epsilon, iterations=300, unroll=unroll).distance.sum().backward()
            grads.append(tokens.grad.flatten())
        similarity = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item()
        assert similarity > floor, f"epsilon {epsilon}: cosine similarity {similarity:.3f}"


def test_cosine_cost_range() -> None:
    a = random_tokens(2, 7, seed=23)
    cost = cosine_cost(a, torch.cat([a, -a], dim=1))
    assert np.allclose(torch.diagonal(cost[:, :, :7], dim1=1, dim2=2).numpy(), 0, atol=1e-6)
    assert np.allclose(torch.diagonal(cost[:, :, 7:], dim1=1, dim2=2).numpy(), 2, atol=1e-6)
    assert ((cost >= -1e-6) & (cost <= 2 + 1e-6)).all()


@pytest.mark.parametrize(("iterations", "epsilon"), [(0, 0.05), (-3, 0.05), (10, 0.0)])
def test_settings_that_cannot_give_a_coupling_are_refused(iterations: int, epsilon: float) -> None:
    cost = cosine_cost(random_tokens(1, 4), random_tokens(1, 5, seed=1))
    with pytest.raises(ValueError, match="iterations >= 1 and epsilon > 0"):
        sinkhorn(cost, epsilon=epsilon, iterations=iterations)

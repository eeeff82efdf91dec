"""Progressive distillation (Salimans & Ho 2022, Alg. 2): the closed forms, family-free.

A student learns to take in ONE deterministic DDIM step what its teacher takes in TWO. Per student
step ``t -> t''`` the teacher goes ``t -> t' -> t''``; from its result ``x''`` the student's target
follows in closed form (paper eq. 9 and Alg. 2, written with ``α = sqrt(ᾱ)``, ``σ = sqrt(1 − ᾱ)``)::

    x0~  = (x'' − (σ''/σ)·x_t) / (α'' − (σ''/σ)·α)        the x0 that one DDIM step must predict
    eps~ = (x_t − α·x0~) / σ                               the same target for an eps-predictor

so that ``α''·x0~ + σ''·eps~ == x''``: one DDIM (η = 0) step with ``eps~`` lands exactly on the
teacher's two-step result. ``ᾱ'' = 1`` when the step ends the sampling (it lands on clean data).

Grids (``progressive_grid``): the student uses ``schedules.ddim_timesteps(N)``, the very grid the
pipeline samples with; the teacher's intermediate times are those of ``ddim_timesteps(2N + 1)``,
which hold every point of the student's grid (the points are ``int(T·k/(N + 1))``). A student of
``N`` steps therefore teaches a student of ``(N − 1)/2`` steps on the exact times it was trained
at: rounds go 15 -> 7 -> 3 -> 1 (``N + 1`` halves), not 16 -> 8 -> 4, whose grids do not nest.
"""

from __future__ import annotations

from torch import Tensor

from talkinghead.diffusion.schedules import ddim_timesteps


def progressive_grid(student_steps: int, num_train: int = 1000) -> list[tuple[int, int, int]]:
    """The student's DDIM steps with the teacher's midpoint: ``(t, t', t'')`` per student step.

    Returns:
        ``student_steps`` triples, t strictly decreasing; ``(t, t'')`` are exactly the pairs of
        ``ddim_timesteps(student_steps)``, ``(t, t')`` and ``(t', t'')`` consecutive pairs of
        ``ddim_timesteps(2 * student_steps + 1)``.
    """
    teacher = dict(ddim_timesteps(2 * student_steps + 1, num_train))
    grid = []
    for t, t_next in ddim_timesteps(student_steps, num_train):
        mid = teacher.get(t)
        if mid is None or teacher.get(mid) != t_next:  # float32 grids nest for every N tried
            raise ValueError(
                f"the {student_steps}-step DDIM grid is not nested in the "
                f"{2 * student_steps + 1}-step one at t={t}"
            )
        grid.append((t, mid, t_next))
    return grid


def ddim_step_target(x_t: Tensor, x_next: Tensor, a_t: Tensor, a_next: Tensor) -> Tensor:
    """The eps that makes one deterministic DDIM step from ``x_t`` land on ``x_next``.

    Args:
        x_t: (B, ...) the state at ``ᾱ = a_t``.
        x_next: (B, ...) where the step must land (the teacher's two-step result).
        a_t, a_next: (B,) ᾱ of the two states (``a_next = 1``: clean data), ``a_next > a_t``.
    Returns:
        eps~ (B, ...) in x_t's dtype (computed in float64).
    """
    shape = (-1,) + (1,) * (x_t.ndim - 1)
    a_t, a_next = a_t.double().view(shape), a_next.double().view(shape)
    alpha, sigma = a_t.sqrt(), (1 - a_t).sqrt()
    ratio = (1 - a_next).sqrt() / sigma  # σ''/σ
    x0 = (x_next.double() - ratio * x_t.double()) / (a_next.sqrt() - ratio * alpha)
    return ((x_t.double() - alpha * x0) / sigma).to(x_t.dtype)


def truncated_snr_weight(a_t: Tensor) -> Tensor:
    """(B,) weight of an eps-MSE that equals the paper's truncated-SNR x0 loss.

    Salimans & Ho weight the x0 error by ``max(SNR, 1)`` (SNR = ᾱ/(1 − ᾱ)): the plain x0 loss at
    low SNR, the eps loss at high SNR. For an eps-predictor ``x0 − x0~ = −(eps − eps~)/sqrt(SNR)``,
    so the same loss on eps is weighted ``max(SNR, 1)/SNR = max(1, 1/SNR)``.
    """
    snr = a_t.double() / (1 - a_t.double())
    return (1 / snr).clamp(min=1.0)

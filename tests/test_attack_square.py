"""Square (Andriushchenko et al. 2020): the redraw of windows that change nothing, and the queries each point used."""
from __future__ import annotations

import torch
from attack_models import tiny_cnn
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerobust.attacks import get_attack, perturbation_norm
from edgerobust.attacks.square import first_changing_signs, sign_table

SHAPE = (1, 6, 6)


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 6), c=st.integers(1, 3), side=st.integers(1, 3), draws=st.integers(1, 10),
       seed=st.integers(0, 2**16))
def test_the_first_drawn_sign_set_that_changes_the_window_is_taken(m, c, side, draws, seed):
    generator = torch.Generator().manual_seed(seed)
    # pixel values from a few levels, so windows that change nothing are common
    candidates = torch.randint(0, 3, (m, 2, c, side, side), generator=generator).float() / 2
    best = torch.randint(0, 3, (m, c, side, side), generator=generator).float() / 2
    plus = torch.randint(0, 2, (m, draws, c), generator=generator)
    chosen = first_changing_signs(candidates[:, 0], candidates[:, 1], best, plus)[:, 0]
    for i in range(m):  # the paper code's loop: draw until the window changes something
        changes = [bool((candidates[i, plus[i, k], torch.arange(c)] != best[i]).any()) for k in range(draws)]
        first = changes.index(True) if any(changes) else 0
        assert torch.equal(chosen[i], plus[i, first])



@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 6), c=st.integers(1, 3), side=st.integers(1, 3), draws=st.integers(1, 10),
       seed=st.integers(0, 2**16))
def test_counting_pixels_at_x_plus_eps_picks_the_same_signs_when_every_pixel_sits_at_a_candidate(m, c, side, draws,
                                                                                              seed):
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand((m, c, side, side), generator=generator) / 2
    candidates = torch.stack([low, low + 0.5], dim=1)  # x − ε and x + ε, distinct at every pixel
    # each pixel of best at one of its two candidates, whole windows at one sign often (unchanged by that sign)
    at_plus = torch.randint(0, 3, (m, c, 1, 1), generator=generator)
    at_plus = torch.where(at_plus == 2, torch.randint(0, 2, (m, c, side, side), generator=generator), at_plus)
    best = candidates.gather(1, at_plus[:, None].expand(m, 1, c, side, side))[:, 0]
    plus = torch.randint(0, 2, (m, draws, c), generator=generator)
    lo, hi = candidates[:, 0], candidates[:, 1]
    assert torch.equal(first_changing_signs(lo, hi, best, plus, two_valued=True),
                       first_changing_signs(lo, hi, best, plus, two_valued=False))

@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 6), side=st.integers(1, 3), draws=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_the_sign_table_picks_the_sign_the_redraw_loop_picks_with_one_channel(m, side, draws, seed):
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand((m, 1, side, side), generator=generator) / 2
    lo, hi = low, low + 0.5
    # none, some or all of each window's pixels at x + ε (the table's columns)
    state = torch.randint(0, 3, (m,), generator=generator)
    at_plus = torch.where(state[:, None, None, None] == 1, torch.rand((m, 1, side, side), generator=generator) < 0.5,
                          (state == 2)[:, None, None, None].expand(m, 1, side, side))
    if side == 1:  # one pixel cannot be "some"
        state = torch.where(state == 1, at_plus.view(m).long() * 2, state)
    else:  # make "some" hold: one pixel at each candidate
        at_plus[:, :, 0, 0] = torch.where(state == 1, True, at_plus[:, :, 0, 0].view(m)).view(m, 1)
        at_plus[:, :, -1, -1] = torch.where(state == 1, False, at_plus[:, :, -1, -1].view(m)).view(m, 1)
    best = torch.where(at_plus, hi, lo)
    uniform = torch.rand((m, draws, 1), generator=generator)
    table = sign_table(uniform)
    assert torch.equal(table[torch.arange(m), state],
                       first_changing_signs(lo, hi, best, uniform < 0.5, two_valued=True).view(m))


def test_square_stays_in_the_ball_and_counts_the_queries_each_point_used():
    model = tiny_cnn(3)
    x = torch.rand((40, *SHAPE), generator=torch.Generator().manual_seed(0))
    y = model(x).argmax(1)
    y[:4] = (y[:4] + 1) % 10  # misclassified from the start: one query, unchanged margin sign
    for queries in (1, 7, 60):
        attack = get_attack("square", eps=0.15, queries=queries, seed=1)
        x_adv = attack(model, x, y)
        with torch.no_grad():
            fooled = model(x_adv).argmax(1) != y
        used = attack.queries_used
        assert (perturbation_norm(x_adv, x, "linf") <= 0.15 + 1e-6).all()
        assert (used >= 1).all() and (used <= queries).all()
        assert (used[~fooled] == queries).all()  # an unbroken point spends the whole budget
        assert fooled[:4].all() and (used[:4] == 1).all()

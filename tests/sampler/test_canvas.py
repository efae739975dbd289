"""The one-hot canvas: what it hands back is exactly one-hot every step, whatever the engine did
to last step's rows, and the input logits are left alone."""

from __future__ import annotations

import pytest
import torch

from qr_sampler.canvas import CANVAS_FROM_ELEMENTS, OneHotCanvas, force_in_place

VOCAB = 97


def small_canvas() -> OneHotCanvas:
    """These tests use small logits; the size rule is tested on its own below."""
    return OneHotCanvas(min_elements=0)


def finite_per_row(t: torch.Tensor) -> list[int]:
    return torch.isfinite(t).sum(dim=1).tolist()


def engine_after_us(out: torch.Tensor, chosen: torch.Tensor) -> None:
    """What vLLM's later stages do to the returned rows, in place: penalties move the chosen
    logit, temperature divides every element, min-p/top-k mask with -inf."""
    rows = torch.arange(out.shape[0])
    out[rows, chosen.clamp(min=0)] -= 0.7  # frequency penalty on the forced token
    out.div_(0.6)  # temperature
    out[:, :3] = out[:, :3].masked_fill(out[:, :3] < -1e30, float("-inf"))  # min-p style mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_step_is_exactly_one_hot_and_the_input_is_untouched(dtype: torch.dtype) -> None:
    """float32 and float16 canvases are written through numpy, bf16 through torch."""
    canvas = small_canvas()
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        logits = torch.randn(8, VOCAB, generator=gen).to(dtype)
        before = logits.clone()
        chosen = torch.randint(0, VOCAB, (8,), generator=gen)
        out = canvas(logits, chosen)
        assert out.data_ptr() != logits.data_ptr()
        assert torch.equal(logits, before)
        assert finite_per_row(out) == [1] * 8  # a stale token from an earlier step would show
        assert out.argmax(dim=1).tolist() == chosen.tolist()
        assert torch.all(out[torch.arange(8), chosen] == 0)
        engine_after_us(out, chosen)


def test_rows_left_to_the_engine_get_their_own_logits_then_are_cleared() -> None:
    canvas = small_canvas()
    logits = torch.randn(4, VOCAB)
    out = canvas(logits, torch.tensor([5, -1, 7, -1]))
    assert torch.equal(out[1], logits[1]) and torch.equal(out[3], logits[3])
    assert finite_per_row(out)[0::2] == [1, 1]
    out = canvas(torch.randn(4, VOCAB), torch.tensor([1, 2, 3, 4]))
    assert finite_per_row(out) == [1, 1, 1, 1]  # the copied rows were reset to -inf


def test_the_batch_may_grow_and_shrink_and_the_vocabulary_change() -> None:
    canvas = small_canvas()
    for rows, vocab in ((2, VOCAB), (6, VOCAB), (3, VOCAB), (6, VOCAB), (4, 50), (4, 50)):
        chosen = torch.arange(rows) % vocab
        out = canvas(torch.randn(rows, vocab), chosen)
        assert out.shape == (rows, vocab)
        assert finite_per_row(out) == [1] * rows
        assert out.argmax(dim=1).tolist() == chosen.tolist()


def test_a_token_outside_the_vocabulary_is_refused_and_the_next_step_is_clean() -> None:
    canvas = small_canvas()
    canvas(torch.randn(3, VOCAB), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        canvas(torch.randn(3, VOCAB), torch.tensor([1, VOCAB + 5, 3]))  # a bug upstream
    out = canvas(torch.randn(3, VOCAB), torch.tensor([4, 5, 6]))
    assert finite_per_row(out) == [1, 1, 1]
    assert out.argmax(dim=1).tolist() == [4, 5, 6]


def test_in_place_forcing_returns_the_input_forced() -> None:
    logits = torch.randn(3, VOCAB)
    kept = logits[1].clone()
    out = force_in_place(logits, torch.tensor([9, -1, 2]))
    assert out is logits
    assert finite_per_row(out)[0::2] == [1, 1] and torch.equal(out[1], kept)


def test_same_tokens_as_in_place_forcing_through_a_real_sampler_step() -> None:
    """The canvas changes where the one-hot rows live, not which token is chosen."""
    from qr_sampler.entropy.mock import MockUniformEntropySource
    from qr_sampler.sampler import SamplingBatch, TokenSampler
    from qr_sampler.types import SamplingConfig

    batch = SamplingBatch.build([SamplingConfig(top_k=20, top_p=0.9, fixed_temperature=0.8)] * 5)
    gen = torch.Generator().manual_seed(11)
    samplers = [
        TokenSampler(MockUniformEntropySource(seed=5), concurrent_fetch=False, forcing=forcing)
        for forcing in (force_in_place, small_canvas())
    ]
    for _ in range(6):
        logits = torch.randn(5, VOCAB, generator=gen)
        outs = []
        for sampler in samplers:
            sampler.sample(logits.clone(), batch)
            assert sampler.forced_logits is not None
            outs.append(sampler.forced_logits.clone())
        assert torch.equal(outs[0], outs[1])


def test_small_logits_are_forced_in_place_and_large_ones_on_the_canvas() -> None:
    canvas = OneHotCanvas()
    assert canvas.min_elements == CANVAS_FROM_ELEMENTS
    small = torch.randn(4, 1000)
    assert canvas(small, torch.tensor([1, 2, 3, 4])) is small
    large = torch.randn(2, CANVAS_FROM_ELEMENTS // 2)
    out = canvas(large, torch.tensor([5, 6]))
    assert out is not large and finite_per_row(out) == [1, 1]
    # A small step in between leaves the canvas to be reset at its next use.
    canvas(torch.randn(4, 1000), torch.tensor([0, 0, 0, 0]))
    out = canvas(torch.randn(2, CANVAS_FROM_ELEMENTS // 2), torch.tensor([7, 8]))
    assert finite_per_row(out) == [1, 1] and out.argmax(dim=1).tolist() == [7, 8]


def test_a_growing_batch_reallocates_in_powers_of_two_up_to_the_engines_largest() -> None:
    canvas = OneHotCanvas(min_elements=0, max_rows=20)
    sizes = []
    for rows in range(1, 21):
        out = canvas(torch.randn(rows, VOCAB), torch.arange(rows) % VOCAB)
        assert finite_per_row(out) == [1] * rows
        sizes.append(canvas.capacity)
    assert sorted(set(sizes)) == [1, 2, 4, 8, 16, 20]

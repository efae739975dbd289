"""Three low-level operations numba lacks, for the kernels that run on torch's OpenMP team.

A kernel handed to the team (:mod:`qr_sampler.omp_team`) is a C callback that receives one
pointer: its parameters, an int64 array of addresses, sizes and counters. These intrinsics let
numba-compiled code use them:

- :func:`pointer` — an address (int64) as a ``void*``, to view memory with ``numba.carray``;
- :func:`take_next` — an atomic fetch-and-add of 1 on an int64 slot: how the team's threads
  take work items in turn, each item once;
- :func:`call_getrandom` — a call through a function address with getrandom's signature
  (the vDSO's, found at run time, so it cannot be a constant in cached code).

Imported only where numba is installed (the kernels compile lazily). numba's on-disk cache of
a kernel is keyed on its own file only: after changing the code an intrinsic generates, touch
the files that use it (``host_kernels.py``, ``entropy/vdso_team.py``) so they recompile.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I64 = ir.IntType(64)
_VOID_P = ir.IntType(8).as_pointer()


@intrinsic
def pointer(typingctx: Any, address: Any) -> Any:
    """``void*`` at ``address``."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], _VOID_P)

    return types.voidptr(address), codegen


@intrinsic
def take_next(typingctx: Any, base: Any, index: Any) -> Any:
    """Atomically add 1 to the int64 at ``base[index]``; returns the value before."""
    if base != types.voidptr or not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        slots = builder.bitcast(args[0], _I64.as_pointer())
        slot = builder.gep(slots, [builder.sext(args[1], _I64)])
        return builder.atomic_rmw("add", slot, ir.Constant(_I64, 1), "seq_cst")

    return types.int64(base, index), codegen


@intrinsic
def call_getrandom(typingctx: Any, function: Any, buffer: Any, length: Any, state: Any,
                   state_size: Any) -> Any:  # fmt: skip
    """``ssize_t getrandom(void *buffer, size_t length, unsigned flags = 0, void *state,
    size_t state_size)`` at address ``function`` (all arguments int64)."""
    if not all(isinstance(a, types.Integer) for a in (function, buffer, length, state,
                                                      state_size)):  # fmt: skip
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        kind = ir.FunctionType(_I64, [_VOID_P, _I64, ir.IntType(32), _VOID_P, _I64])
        target = builder.inttoptr(args[0], kind.as_pointer())
        return builder.call(target, [builder.inttoptr(args[1], _VOID_P), args[2],
                                     ir.Constant(ir.IntType(32), 0),
                                     builder.inttoptr(args[3], _VOID_P), args[4]])  # fmt: skip

    return types.int64(function, buffer, length, state, state_size), codegen

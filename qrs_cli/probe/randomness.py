"""Stage 10, randomness: do the bytes the server sent look like uniform random bytes?

Not a certification (that takes gigabytes and a battery such as NIST SP 800-22 or TestU01); a
smoke test that catches what breaks a sampler: a stuck source (constant or repeating), a biased
one (the byte mean drifts, which shifts every token choice, since the sampler amplifies exactly
that mean), or broken bits. Five checks, each a p-value or a count:

- **mean**: z = (mean − 127.5) / (σ/√N), σ = √((256²−1)/12); two-sided normal p-value;
- **χ²**: byte histogram against uniform, 255 degrees of freedom; p = Q(127.5, χ²/2);
- **monobit** (SP 800-22 §2.1): ones vs zeros over all bits;
- **runs** (SP 800-22 §2.3): the number of runs of equal bits (it fails at once when the
  monobit prerequisite |π − ½| < 2/√n does not hold, as the standard says);
- **repeats**: identical replies (a device returning one buffer again and again).

Each p-value is compared with :data:`ALPHA` = 1e-4, not the usual 0.01: with four tests a good
source then raises a false alarm in about 4 probes in 10,000, while a stuck or biased source
over ≥ 10 KB gives p-values far below it. The statistics are computed here with numpy and
``math`` (the incomplete gamma function by its series and continued fraction), so the CLI needs
no scipy; the tests check them against scipy and against the standard's worked examples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qr_sampler.types import UNIFORM_BYTE_STD
from qrs_cli.probe.context import ProbeContext, StageOutcome, ok, skipped, warn

#: Per-test significance level below which a check fails (see the module docstring).
ALPHA = 1e-4
#: Fewest bytes worth testing: 5 expected per histogram bin, the usual χ² validity rule.
MIN_BYTES = 5 * 256
_MAX_ITERATIONS = 10_000
_EPS = 1e-15
_TINY = 1e-300


def regularized_gamma_q(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a), the upper regularized incomplete gamma function (a > 0, x ≥ 0).

    The series converges fast for x < a + 1 (it gives P = 1 − Q), the continued fraction
    (evaluated by the modified Lentz method) for x ≥ a + 1.
    """
    if a <= 0 or x < 0:
        raise ValueError("need a > 0 and x ≥ 0")
    if x == 0:
        return 1.0
    log_prefactor = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        for n in range(1, _MAX_ITERATIONS):
            term *= x / (a + n)
            total += term
            if abs(term) < abs(total) * _EPS:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefactor))
    b = x + 1.0 - a
    c = 1.0 / _TINY
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = d if abs(d) > _TINY else _TINY
        c = b + an / c
        c = c if abs(c) > _TINY else _TINY
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return min(1.0, math.exp(log_prefactor) * h)


def chi2_sf(x: float, dof: int) -> float:
    """P(X ≥ x) for a χ² variable with ``dof`` degrees of freedom."""
    return regularized_gamma_q(dof / 2.0, x / 2.0)


def normal_two_sided_p(z: float) -> float:
    """P(|Z| ≥ |z|) for a standard normal Z."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def byte_mean_test(data: npt.NDArray[np.uint8]) -> tuple[float, float, float]:
    """(mean, z, p) of the byte mean against 127.5, with the uniform byte σ."""
    n = data.size
    mean = float(data.mean(dtype=np.float64))
    z = (mean - 127.5) / (UNIFORM_BYTE_STD / math.sqrt(n))
    return mean, z, normal_two_sided_p(z)


def chi_square_test(data: npt.NDArray[np.uint8]) -> tuple[float, float]:
    """(χ², p) of the 256-bin byte histogram against the uniform distribution."""
    counts = np.bincount(data, minlength=256).astype(np.float64)
    expected = data.size / 256.0
    statistic = float(((counts - expected) ** 2).sum() / expected)
    return statistic, chi2_sf(statistic, 255)


def monobit_test(bits: npt.NDArray[np.uint8]) -> float:
    """SP 800-22 frequency (monobit) test p-value; ``bits`` holds 0/1 values."""
    n = bits.size
    s = 2 * int(np.count_nonzero(bits)) - n
    return math.erfc(abs(s) / math.sqrt(n) / math.sqrt(2.0))


def runs_test(bits: npt.NDArray[np.uint8]) -> float:
    """SP 800-22 runs test p-value; 0.0 when the frequency prerequisite fails."""
    n = bits.size
    pi = int(np.count_nonzero(bits)) / n
    if abs(pi - 0.5) >= 2.0 / math.sqrt(n):
        return 0.0
    runs = 1 + int(np.count_nonzero(bits[1:] != bits[:-1]))
    expected = 2.0 * n * pi * (1.0 - pi)
    return math.erfc(abs(runs - expected) / (2.0 * math.sqrt(2.0 * n) * pi * (1.0 - pi)))


@dataclass(frozen=True)
class RandomnessAssessment:
    """The statistics of one byte sample and the checks that failed (empty = looks random)."""

    bytes_tested: int
    mean: float
    mean_z: float
    mean_p: float
    chi2: float
    chi2_p: float
    monobit_p: float
    runs_p: float
    replies_compared: int
    repeated_replies: int
    failed: tuple[str, ...]

    @property
    def looks_random(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = list(self.failed)
        data["alpha"] = ALPHA
        data["verdict"] = "looks random" if self.looks_random else "suspect"
        return data


def assess(data: bytes, *, replies_compared: int = 0, repeated_replies: int = 0,
           alpha: float = ALPHA) -> RandomnessAssessment:
    """Run every check on ``data`` (≥ 2 bytes); a check fails when its p-value < ``alpha``."""
    arr = np.frombuffer(data, dtype=np.uint8)
    bits = np.unpackbits(arr)
    mean, z, mean_p = byte_mean_test(arr)
    chi2, chi2_p = chi_square_test(arr)
    monobit_p = monobit_test(bits)
    runs_p = runs_test(bits)
    failed = [name for name, p in (("mean", mean_p), ("chi2", chi2_p), ("monobit", monobit_p),
                                   ("runs", runs_p)) if p < alpha]
    if repeated_replies:
        failed.append("repeats")
    return RandomnessAssessment(arr.size, mean, z, mean_p, chi2, chi2_p, monobit_p, runs_p,
                                replies_compared, repeated_replies, tuple(failed))


_FAILURE_TEXT = {
    "mean": "byte mean off 127.5",
    "chi2": "byte histogram far from uniform",
    "monobit": "ones and zeros unbalanced",
    "runs": "runs of equal bits wrong",
    "repeats": "identical replies",
}


def run_randomness(ctx: ProbeContext) -> StageOutcome:
    """Assess the bytes collected by the earlier stages."""
    data = ctx.sample.data()
    if len(data) < MIN_BYTES:
        return skipped(f"too few bytes to test ({len(data):,} < {MIN_BYTES:,})",
                       {"bytes_tested": len(data)})
    result = assess(data, replies_compared=ctx.sample.compared,
                    repeated_replies=ctx.sample.repeats)
    details = result.to_dict()
    numbers = (f"mean {result.mean:.2f} (z {result.mean_z:+.2f}), χ² p {result.chi2_p:.2g}, "
               f"monobit p {result.monobit_p:.2g}, runs p {result.runs_p:.2g}")
    if result.looks_random:
        return ok(f"{result.bytes_tested:,} bytes look random: {numbers}", details)
    reasons = ", ".join(_FAILURE_TEXT[name] for name in result.failed)
    repeats = (f"; {result.repeated_replies} of {result.replies_compared} replies repeated"
               if result.repeated_replies else "")
    return warn(f"SUSPECT source ({reasons}): {numbers}{repeats}; "
                f"{result.bytes_tested:,} bytes tested", details,
                "a stuck or biased source biases every token choice: check the device before "
                "using it (--strict turns this warning into exit 8)")

"""Energy per operation of the hardware an estimate assumes (pure data, no torch).

Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014: 45 nm
CMOS at 0.9 V, per operation — add / multiply: 8-bit integer 0.03 / 0.2 pJ, 32-bit integer
0.1 / 3.1 pJ, 16-bit float 0.4 / 1.1 pJ, 32-bit float 0.9 / 3.7 pJ.  A multiply-accumulate
(the ANN's operation) costs a multiply and an add; a spike's synaptic operation (the SNN's)
costs an add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

SOURCE = "Horowitz, ISSCC 2014, 45 nm CMOS"

ProfileName = Literal["horowitz-45nm-fp32", "horowitz-45nm-fp16", "horowitz-45nm-int32",
                      "horowitz-45nm-int8"]
DEFAULT_PROFILE: ProfileName = "horowitz-45nm-fp32"


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    arithmetic: str
    add_pj: float
    multiply_pj: float

    @property
    def e_mac_pj(self) -> float:
        # the table's values have at most two decimals: 3.7 + 0.9 is 4.6, not 4.6000000000000005
        return round(self.multiply_pj + self.add_pj, 6)

    @property
    def e_ac_pj(self) -> float:
        return self.add_pj

    @property
    def source(self) -> str:
        return f"{SOURCE}, {self.arithmetic}"

    def microjoules(self, macs: float = 0.0, accumulates: float = 0.0) -> float:
        return (self.e_mac_pj * macs + self.e_ac_pj * accumulates) * 1e-6


PROFILES: dict[str, HardwareProfile] = {profile.name: profile for profile in (
    HardwareProfile("horowitz-45nm-fp32", "32-bit floating point", 0.9, 3.7),
    HardwareProfile("horowitz-45nm-fp16", "16-bit floating point", 0.4, 1.1),
    HardwareProfile("horowitz-45nm-int32", "32-bit integer", 0.1, 3.1),
    HardwareProfile("horowitz-45nm-int8", "8-bit integer", 0.03, 0.2),
)}


def spike_count_bits(timesteps: int) -> int:
    """⌈log2(T + 1)⌉: the bits that hold a neuron's spike count over T steps (0 … T)."""
    return max(1, math.ceil(math.log2(timesteps + 1)))


def quantised_ann_profile(bits: int) -> HardwareProfile:
    """The integer arithmetic a b-bit quantised ANN runs on: 8-bit up to 8 bits, else 32-bit
    (the widths Horowitz measured)."""
    return PROFILES["horowitz-45nm-int8" if bits <= 8 else "horowitz-45nm-int32"]

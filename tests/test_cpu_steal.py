"""The hypervisor's steal share, recorded beside latency measurements."""

from __future__ import annotations

import time

from speechnas.hardware.cpu import cpu_ticks, steal_share

# user nice system idle iowait irq softirq steal guest guest_nice
BEFORE = "cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\nintr 1\n"
AFTER = "cpu  200 0 70 880 10 0 0 90 30 0\ncpu0 100 0 35 440 5 0 0 45 15 0\nintr 2\n"


def test_steal_share_is_steal_over_the_time_spent_between_two_readings() -> None:
    before, after = cpu_ticks(BEFORE), cpu_ticks(AFTER)
    assert before is not None and before[7] == 40
    # 100 user + 20 system + 80 idle + 50 steal spent; guest time is inside user already
    assert steal_share(before, after) == 50 / 250
    assert steal_share(before, before) is None  # no time passed
    assert steal_share(None, after) is None
    assert steal_share((1, 2, 3), (2, 3, 4)) is None  # a kernel without a steal counter
    assert cpu_ticks("intr 1\n") is None


def test_this_machine_reports_a_share_between_zero_and_one() -> None:
    before = cpu_ticks()
    assert before is not None  # Linux
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
    share = steal_share(before, cpu_ticks())
    assert share is not None and 0.0 <= share <= 1.0

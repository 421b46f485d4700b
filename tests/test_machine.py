"""What a report says about the CPU: hand-written /proc/cpuinfo excerpts and the values they must give."""
from __future__ import annotations

from tarq._machine import cpu_record

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512dq

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 49
model name\t: AMD EPYC
stepping\t: 0
flags\t\t: fpu avx2
"""

ZEN3 = ZEN4.replace("model\t\t: 17", "model\t\t: 1", 1).replace(" avx512f avx512dq", "", 1)

GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes sve
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def test_identity_tells_apart_what_the_model_name_does_not():
    assert cpu_record(ZEN4) == {"cpu": "AMD EPYC", "cpu_id": "AuthenticAMD 25/17/1 avx512f"}   # the first processor
    assert cpu_record(ZEN3) == {"cpu": "AMD EPYC", "cpu_id": "AuthenticAMD 25/1/1 avx2"}
    assert cpu_record(GRAVITON)["cpu_id"] == "0x41 0xd40 sve"

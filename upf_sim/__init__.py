"""upf_sim: the simulated 5G RAN and UPF in front of the MEP (docs/upf_sim.md).

- ``topology``: the lab's network namespaces (DESIGN.md section 7);
- ``sessions``: the PDU session table (UE address, TEIDs, QFI) from YAML or generated;
- ``upf``: the UPF's user plane, XDP on N3 and N6 (ebpf/upf.c);
- ``gnb``: the gNB, tunnelling UEs with real IP stacks (ebpf/gnb.c);
- ``traffic``: flow mixes and the live-frames uplink generator (ebpf/gen.c);
- ``counters``, ``reasons``, ``bpf``: what the programs counted, and loading them with bcc;
- ``cli``: the ``upf-sim`` command.
"""
from .gnb import Gnb
from .sessions import Session, SessionTable
from .topology import ADDR, Topology
from .traffic import FlowMix, Generator
from .upf import Upf

__all__ = ["ADDR", "Topology", "Session", "SessionTable", "Upf", "Gnb", "FlowMix", "Generator"]

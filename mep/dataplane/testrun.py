"""BPF_PROG_TEST_RUN: run one frame through a loaded XDP program, in the kernel.

Shared by the tests, bench/, ``mep explain`` and ``mep doctor``. Three parts:

- ``prog_test_run(prog_fd, frame, ...)``: ctypes over libbpf.so.1
  ``bpf_prog_test_run_opts``; returns ``RunResult(retval, output, duration_ns)``.
  ``struct bpf_test_run_opts`` is mirrored by ``BpfTestRunOpts`` with the libbpf
  1.1 layout; tests/unit/test_testrun_layout.py checks its size and every
  offset against /usr/include/bpf/bpf.h.
- ``map_shape(map_fd)``: a map's key size, value size and entries as the
  kernel holds them (libbpf ``bpf_obj_get_info_by_fd``); the XDP loader
  checks the maps it adopts with it. ``map_memlock(map_fd)``: the bytes the
  kernel charges for the map (its fdinfo), what ``mep doctor -v`` reports.
- ``libbpf()``: the ctypes handle on libbpf.so.1 with the signatures this
  module and xsk.py call.
- ``ProbeProgram``: a small XDP program loaded with bcc, for machine checks
  (``mep doctor``) and tests of this wrapper. This module and xdp.py are the
  only importers of bcc (STYLE.md section 1); bcc is imported on first load,
  so importing this module needs neither bcc nor root.

Costs measured on the project's machine (kernel 6.18): one call with
repeat=1 takes about 6 us from Python; repeat > 1 adds about 18 ms per call,
so loops of single runs are faster for small counts.
"""
from __future__ import annotations

import ctypes
import errno as errno_mod
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import AttachError, DataplaneError, LoadError

__all__ = [
    "XDP_ABORTED",
    "XDP_DROP",
    "XDP_PASS",
    "XDP_TX",
    "XDP_REDIRECT",
    "XDP_ACTION_NAMES",
    "XDP_FLAGS_SKB_MODE",
    "XDP_FLAGS_DRV_MODE",
    "BPF_F_TEST_XDP_LIVE_FRAMES",
    "BpfTestRunOpts",
    "XdpMd",
    "RunResult",
    "prog_test_run",
    "libbpf",
    "MapShape",
    "map_shape",
    "ProbeProgram",
    "PROBE_ETHERTYPE",
]

# enum xdp_action (include/uapi/linux/bpf.h)
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
XDP_ACTION_NAMES = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}

# XDP attach flags (include/uapi/linux/if_link.h)
XDP_FLAGS_SKB_MODE = 1 << 1  # generic: after the skb is built, any driver
XDP_FLAGS_DRV_MODE = 1 << 2  # native: in the driver (veth supports it)

# BPF_PROG_TEST_RUN flag: send XDP_TX/XDP_REDIRECT frames for real (kernel >= 5.18).
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1

# Largest frame accepted: a 9000-byte-MTU jumbo frame plus Ethernet and VLAN
# headers. Beyond about 3.5 KiB (a page less XDP headroom and tailroom) the
# kernel hands the program the rest as fragments it does not see directly.
_MAX_FRAME_BYTES = 9018
# The kernel refuses (EINVAL) an XDP test-run frame shorter than an Ethernet header.
_MIN_FRAME_BYTES = 14
# Room for a program that grows the frame (bpf_xdp_adjust_head, encapsulation).
_OUT_SLACK_BYTES = 512


class BpfTestRunOpts(ctypes.Structure):
    """``struct bpf_test_run_opts`` of libbpf 1.1 (/usr/include/bpf/bpf.h)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),  # in: room in data_out; out: bytes written
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),  # out: the program's return value (the XDP action)
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),  # out: average ns per repetition
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class XdpMd(ctypes.Structure):
    """``struct xdp_md`` (include/uapi/linux/bpf.h): the XDP context passed as ctx_in."""

    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


class RunResult(NamedTuple):
    """What one test run returned: the XDP action, the frame after the program, ns per run,
    and the XDP metadata the program left in front of the frame (bpf_xdp_adjust_meta)."""

    retval: int
    output: bytes
    duration_ns: int
    meta: bytes = b""


_libbpf: Any = None


def libbpf() -> Any:
    global _libbpf
    if _libbpf is None:
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as exc:
            raise DataplaneError(f"cannot load libbpf.so.1 ({exc}); fix: apt-get install libbpf1") from None
        lib.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(BpfTestRunOpts)]
        lib.bpf_prog_test_run_opts.restype = ctypes.c_int
        lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
        lib.bpf_obj_get_info_by_fd.restype = ctypes.c_int
        # For xsk.py's redirect program (libbpf 1.1 signatures; NULL opts everywhere).
        lib.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32,
                                       ctypes.c_void_p]
        lib.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                      ctypes.c_void_p]
        lib.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
        lib.bpf_xdp_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]
        lib.bpf_xdp_detach.argtypes = [ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p]
        lib.bpf_prog_get_fd_by_id.argtypes = [ctypes.c_uint32]
        for fn in ("bpf_map_create", "bpf_prog_load", "bpf_map_update_elem", "bpf_xdp_attach", "bpf_xdp_detach",
                   "bpf_prog_get_fd_by_id"):
            getattr(lib, fn).restype = ctypes.c_int
        _libbpf = lib
    return _libbpf


class _MapInfoHead(ctypes.Structure):
    """The start of ``struct bpf_map_info`` (include/uapi/linux/bpf.h); the kernel fills as much as asked."""

    _fields_ = [(name, ctypes.c_uint32) for name in ("type", "id", "key_size", "value_size", "max_entries")]


class MapShape(NamedTuple):
    key_size: int
    value_size: int
    max_entries: int


def map_shape(map_fd: int) -> MapShape:
    """What the kernel holds for the map behind ``map_fd``: key size, value size, entries."""
    info = _MapInfoHead()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if libbpf().bpf_obj_get_info_by_fd(map_fd, ctypes.byref(info), ctypes.byref(size)) != 0:
        err = ctypes.get_errno()
        raise DataplaneError(f"bpf_obj_get_info_by_fd on map fd {map_fd} failed: {os.strerror(err)}")
    return MapShape(info.key_size, info.value_size, info.max_entries)


def map_memlock(map_fd: int) -> int:
    """Bytes the kernel charges for the map behind ``map_fd`` (``memlock`` in /proc/self/fdinfo; every CPU's
    copy for a per-CPU map)."""
    with open(f"/proc/self/fdinfo/{map_fd}") as info:
        for line in info:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    raise DataplaneError(f"fd {map_fd} has no memlock line in /proc/self/fdinfo: not a BPF map")


def prog_test_run(
    prog_fd: int,
    frame: bytes,
    *,
    ingress_ifindex: int | None = None,
    rx_queue_index: int = 0,
    repeat: int = 1,
    flags: int = 0,
    out_size: int | None = None,
) -> RunResult:
    """Run ``frame`` through the XDP program ``prog_fd`` with BPF_PROG_TEST_RUN.

    ``ingress_ifindex`` passes an ``xdp_md`` context; the kernel requires that
    interface to exist in the caller's network namespace (else ENODEV).
    ``repeat`` > 1 runs the frame that many times and reports the average
    duration. ``out_size`` bounds the output (default: the frame plus 512
    bytes). With BPF_F_TEST_XDP_LIVE_FRAMES the frames really go out
    (XDP_TX, XDP_REDIRECT) and nothing comes back: the output is empty.
    Raises DataplaneError naming the errno on failure.
    """
    if not _MIN_FRAME_BYTES <= len(frame) <= _MAX_FRAME_BYTES:
        raise DataplaneError(f"a test-run frame is {_MIN_FRAME_BYTES}..{_MAX_FRAME_BYTES} bytes, got {len(frame)}")
    data_in = ctypes.create_string_buffer(frame, len(frame))
    live = bool(flags & BPF_F_TEST_XDP_LIVE_FRAMES)  # the kernel refuses an output buffer then
    room = 0 if live else out_size if out_size is not None else len(frame) + _OUT_SLACK_BYTES
    data_out = ctypes.create_string_buffer(room)
    opts = BpfTestRunOpts(
        sz=ctypes.sizeof(BpfTestRunOpts),
        data_in=ctypes.cast(data_in, ctypes.c_void_p),
        data_out=None if live else ctypes.cast(data_out, ctypes.c_void_p),
        data_size_in=len(frame),
        data_size_out=room,
        repeat=repeat,
        flags=flags,
    )
    ctx = None
    ctx_out = XdpMd()
    if ingress_ifindex is not None:
        # The kernel wants data = data_meta = 0 and data_end = the frame length.
        ctx = XdpMd(data_end=len(frame), ingress_ifindex=ingress_ifindex, rx_queue_index=rx_queue_index)
        opts.ctx_in = ctypes.cast(ctypes.pointer(ctx), ctypes.c_void_p)
        opts.ctx_size_in = ctypes.sizeof(XdpMd)
        if not live:  # the output starts at data_meta; ctx_out.data says where the frame begins
            opts.ctx_out = ctypes.cast(ctypes.pointer(ctx_out), ctypes.c_void_p)
            opts.ctx_size_out = ctypes.sizeof(XdpMd)
    rc = libbpf().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts))
    if rc != 0:
        err = -rc if rc < 0 else ctypes.get_errno()
        name = errno_mod.errorcode.get(err, str(err))
        raise DataplaneError(
            f"BPF_PROG_TEST_RUN on prog fd {prog_fd} failed: {name} ({os.strerror(err)})"
            + (" (ingress_ifindex must exist in this network namespace)" if err == errno_mod.ENODEV else "")
        )
    raw = data_out.raw[: opts.data_size_out]
    meta_len = ctx_out.data - ctx_out.data_meta if ctx is not None and not live else 0
    return RunResult(opts.retval, raw[meta_len:], opts.duration, raw[:meta_len])


# EtherType 0x88B5 is reserved for local experiments (IEEE 802): no real
# traffic uses it, so the probe program can act on it and pass everything else.
PROBE_ETHERTYPE = 0x88B5

_PROBE_SOURCE = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>

/* Probe: frames of EtherType 0x88B5 get their MAC addresses swapped and go
 * back out (XDP_TX); anything else passes. Enough to prove that the program
 * loaded, ran, read and wrote packet memory. */
int mep_probe(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	unsigned char tmp[ETH_ALEN];

	if ((void *)(eth + 1) > data_end) /* the verifier needs the bound */
		return XDP_DROP;
	if (eth->h_proto != __constant_htons(0x88B5))
		return XDP_PASS;
	__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
	return XDP_TX;
}
"""


@dataclass
class ProbeProgram:
    """The probe XDP program, compiled and loaded with bcc; ``close()`` unloads it.

    It swaps the MACs of EtherType 0x88B5 frames and returns XDP_TX, and
    returns XDP_PASS for any other frame.
    """

    _bpf: Any
    _fn: Any

    @classmethod
    def load(cls) -> "ProbeProgram":
        """Compile and load (0.3 s on the project's machine); raises LoadError with bcc's message."""
        try:
            from bcc import BPF  # the one bcc import outside xdp.py; imported late, see above
        except ImportError as exc:
            raise LoadError(f"cannot import bcc ({exc}); fix: apt-get install python3-bpfcc") from None
        try:
            bpf = BPF(text=_PROBE_SOURCE.encode())  # bcc warns on str arguments
            fn = bpf.load_func(b"mep_probe", BPF.XDP)
        except Exception as exc:  # bcc raises bare Exception for compile and verifier failures
            raise LoadError(f"probe XDP program did not load: {exc}") from None
        return cls(bpf, fn)

    @property
    def fd(self) -> int:
        """The program's file descriptor (for ``prog_test_run``)."""
        fd: int = self._fn.fd
        return fd

    def attach(self, ifname: str, flags: int) -> None:
        """Attach to ``ifname`` in the calling thread's network namespace; raises AttachError."""
        try:
            self._bpf.attach_xdp(ifname.encode(), self._fn, flags)  # a static method of bcc.BPF
        except Exception as exc:  # bcc raises bare Exception with the netlink error text
            raise AttachError(f"XDP attach to {ifname} (flags {flags:#x}) failed: {exc}") from None

    def detach(self, ifname: str, flags: int) -> None:
        """Detach whatever XDP program ``ifname`` has in the mode of ``flags``."""
        try:
            self._bpf.remove_xdp(ifname.encode(), flags)
        except Exception as exc:
            raise AttachError(f"XDP detach from {ifname} (flags {flags:#x}) failed: {exc}") from None

    def close(self) -> None:
        """Unload the program (it stays alive while attached somewhere)."""
        self._bpf.cleanup()

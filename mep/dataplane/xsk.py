"""AF_XDP receive for the fastpath engine: the XDP program that hands a port's frames to its AF_XDP socket.

One program and one XSKMAP per port. The program is five instructions,
assembled here and loaded with libbpf (``testrun.libbpf()``), so it needs
neither bcc nor a compiler and loads where the XDP engine's program cannot::

    r2 = ctx->rx_queue_index
    r1 = &xsks                       ; an XSKMAP with one entry: the engine's socket, bound to queue 0
    r3 = XDP_PASS                    ; a queue without a socket: to the stack (the AF_PACKET ring takes it)
    call bpf_redirect_map
    exit

It is attached in native mode only and never over another program
(``XDP_FLAGS_UPDATE_IF_NOEXIST``), except one of its own name left by a
crashed engine (``PROG_NAME``), which it replaces. Generic mode would loop:
frames the engine passes to the stack re-enter the port's ingress (mirred)
and generic XDP would hand them back to the socket.
"""
from __future__ import annotations

import ctypes
import os
import struct
from typing import Optional

from ..errors import AttachError
from . import links
from .testrun import XDP_FLAGS_DRV_MODE, XDP_PASS, libbpf

__all__ = ["PROG_NAME", "XskRedirect", "attached_program"]

PROG_NAME = "mep_xsk_rx"
BPF_MAP_TYPE_XSKMAP = 17      # enum bpf_map_type (include/uapi/linux/bpf.h)
BPF_PROG_TYPE_XDP = 6         # enum bpf_prog_type
BPF_FUNC_REDIRECT_MAP = 51    # enum bpf_func_id
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0  # include/uapi/linux/if_link.h
XDP_FLAGS_REPLACE = 1 << 4
XDP_MD_RX_QUEUE_INDEX = 16    # offsetof(struct xdp_md, rx_queue_index)


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn``: opcode, dst and src registers in one byte, 16-bit offset, 32-bit immediate."""
    return struct.pack("<BBhi", code, dst | src << 4, off, imm)


def program(map_fd: int) -> bytes:
    """The instructions of the module docstring, with ``map_fd`` as the XSKMAP."""
    return b"".join((
        _insn(0x61, dst=2, src=1, off=XDP_MD_RX_QUEUE_INDEX),  # BPF_LDX | BPF_MEM | BPF_W
        _insn(0x18, dst=1, src=1, imm=map_fd), _insn(0),       # BPF_LD | BPF_DW | BPF_IMM, BPF_PSEUDO_MAP_FD
        _insn(0xB7, dst=3, imm=XDP_PASS),                      # BPF_ALU64 | BPF_MOV | BPF_K
        _insn(0x85, imm=BPF_FUNC_REDIRECT_MAP),                # BPF_JMP | BPF_CALL
        _insn(0x95),                                           # BPF_JMP | BPF_EXIT
    ))


class _XdpAttachOpts(ctypes.Structure):
    """``struct bpf_xdp_attach_opts`` of libbpf 1.1: sz, old_prog_fd."""

    _fields_ = [("sz", ctypes.c_size_t), ("old_prog_fd", ctypes.c_int)]


class _ProgInfoHead(ctypes.Structure):
    """The start of ``struct bpf_prog_info`` up to ``name`` (include/uapi/linux/bpf.h)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
                ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16)]


def _errno_text(what: str) -> str:
    err = ctypes.get_errno()
    return f"{what}: {os.strerror(err)}"


def _prog_fd_by_id(prog_id: int) -> int:
    fd: int = libbpf().bpf_prog_get_fd_by_id(prog_id)
    return fd


def attached_program(ifindex: int) -> tuple[str, int, Optional[str]]:
    """(XDP mode, program id or 0, program name or None) of ``ifindex``, in the calling thread's namespace."""
    mode, prog_id = links.xdp_attached(ifindex)
    if mode == "none" or not prog_id:
        return mode, 0, None
    fd = _prog_fd_by_id(prog_id)
    if fd < 0:
        return mode, prog_id, None  # detached meanwhile
    try:
        info = _ProgInfoHead()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if libbpf().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
            return mode, prog_id, None
        return mode, prog_id, info.name.decode(errors="replace")
    finally:
        os.close(fd)


class XskRedirect:
    """One port's redirect program and its XSKMAP. ``insert(fd)``, then ``attach()``; ``close()`` undoes both.

    Raises AttachError with the kernel's reason at every step.
    """

    def __init__(self, ifindex: int) -> None:
        lib = libbpf()
        self.ifindex = ifindex
        self.attached = False
        self.map_fd: int = lib.bpf_map_create(BPF_MAP_TYPE_XSKMAP, b"mep_xsks", 4, 4, 1, None)
        if self.map_fd < 0:
            raise AttachError(_errno_text("XSKMAP create"))
        code = program(self.map_fd)
        self.prog_fd: int = lib.bpf_prog_load(BPF_PROG_TYPE_XDP, PROG_NAME.encode(), b"GPL", code,
                                              len(code) // 8, None)
        if self.prog_fd < 0:
            text = _errno_text("AF_XDP redirect program load")
            os.close(self.map_fd)
            raise AttachError(text)

    def insert(self, sock_fd: int) -> None:
        """Make ``sock_fd`` (an AF_XDP socket bound to queue 0 of this port) the target of queue 0."""
        key, value = ctypes.c_uint32(0), ctypes.c_uint32(sock_fd)
        if libbpf().bpf_map_update_elem(self.map_fd, ctypes.byref(key), ctypes.byref(value), 0) != 0:
            raise AttachError(_errno_text("XSKMAP update"))

    def attach(self) -> None:
        """Attach natively to the port, in the calling thread's namespace (see the module docstring)."""
        _, old_id, name = attached_program(self.ifindex)
        flags = XDP_FLAGS_DRV_MODE
        opts: Optional[_XdpAttachOpts] = None
        if name == PROG_NAME:  # a crashed engine's: replace exactly that one
            old_fd = _prog_fd_by_id(old_id)
            if old_fd >= 0:
                opts = _XdpAttachOpts(ctypes.sizeof(_XdpAttachOpts), old_fd)
                flags |= XDP_FLAGS_REPLACE
        elif name is not None:
            raise AttachError(f"ifindex {self.ifindex} has XDP program '{name}' attached; the AF_XDP receive "
                              "program does not replace another program")
        if not flags & XDP_FLAGS_REPLACE:
            flags |= XDP_FLAGS_UPDATE_IF_NOEXIST
        try:
            rc = libbpf().bpf_xdp_attach(self.ifindex, self.prog_fd, flags, ctypes.byref(opts) if opts else None)
            if rc != 0:
                raise AttachError(f"native XDP attach of {PROG_NAME} to ifindex {self.ifindex}: {os.strerror(-rc)}")
        finally:
            if opts is not None:
                os.close(opts.old_prog_fd)
        self.attached = True

    def detach(self) -> None:
        """Detach the program if it is still the one attached (atomically: XDP_FLAGS_REPLACE)."""
        if not self.attached:
            return
        opts = _XdpAttachOpts(ctypes.sizeof(_XdpAttachOpts), self.prog_fd)
        libbpf().bpf_xdp_detach(self.ifindex, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, ctypes.byref(opts))
        self.attached = False

    def close(self) -> None:
        """Detach (see ``detach``) and release the program and map (in the ports' namespace)."""
        self.detach()
        for fd in (self.prog_fd, self.map_fd):
            if fd >= 0:
                os.close(fd)
        self.prog_fd = self.map_fd = -1

"""The ctypes mirrors in mep/dataplane/testrun.py against the C headers they copy.

STYLE.md section 3: a layout has one source; a Python mirror is checked for
its size and every field offset. gcc prints offsetof/sizeof from
/usr/include/bpf/bpf.h (libbpf-dev) and linux/bpf.h; without gcc or the
headers the test skips and says which is missing.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from mep.dataplane.testrun import BpfTestRunOpts, XdpMd

BPF_H = Path("/usr/include/bpf/bpf.h")

_PROGRAM = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#define FIELD(type, f) printf(#type " " #f " %zu %zu\n", offsetof(struct type, f), sizeof(((struct type *)0)->f))
int main(void)
{
	printf("bpf_test_run_opts sizeof %zu 0\n", sizeof(struct bpf_test_run_opts));
	printf("xdp_md sizeof %zu 0\n", sizeof(struct xdp_md));
%s
	return 0;
}
"""


def _c_layout(tmp_path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (apt-get install build-essential)")
    if not BPF_H.is_file():
        pytest.skip(f"{BPF_H} is missing (apt-get install libbpf-dev)")
    lines = [f"\tFIELD(bpf_test_run_opts, {field[0]});" for field in BpfTestRunOpts._fields_]
    lines += [f"\tFIELD(xdp_md, {field[0]});" for field in XdpMd._fields_]
    src = tmp_path / "layout.c"
    src.write_text(_PROGRAM.replace("%s", "\n".join(lines)))
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    layout = {}
    for line in out.splitlines():
        struct, field, offset, size = line.split()
        layout[(struct, field)] = (int(offset), int(size))
    return layout


@pytest.mark.parametrize(("struct", "mirror"), [("bpf_test_run_opts", BpfTestRunOpts), ("xdp_md", XdpMd)])
def test_mirror_matches_header(tmp_path: Path, struct: str, mirror: type[ctypes.Structure]) -> None:
    layout = _c_layout(tmp_path)
    assert ctypes.sizeof(mirror) == layout[(struct, "sizeof")][0]
    for name in (f[0] for f in mirror._fields_):
        field = getattr(mirror, name)
        assert (field.offset, field.size) == layout[(struct, name)], f"{struct}.{name}"

#!/usr/bin/env bash
# make setup: idempotent machine + venv set-up for the MEP.
# Each step prints one line: "ok" when nothing had to change, or what it did.
# A failing step names the missing piece and the fix, then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
APT_PACKAGES=(
  python3-bpfcc bpfcc-tools libbpf1 libbpf-dev linux-headers-amd64 python3-dev python3-venv
  build-essential clang iproute2 bpftool ethtool etcd-server nftables iptables
  knot-dnsutils unbound dnsperf tshark tcpreplay netsniff-ng iperf3 wrk protobuf-compiler iputils-ping openssl
  linux-perf
)

# pip warns about every extra index directory missing on this machine; hide
# only those lines, keep its status.
quiet_pip() { "$VENV/bin/pip" "$@" 2>&1 | grep -v '^WARNING: Location' >&2 || true; return "${PIPESTATUS[0]}"; }

step() { printf '[setup] %-22s %s\n' "$1" "$2"; }
fail() { printf '[setup] %-22s FAIL: %s\n        fix: %s\n' "$1" "$2" "$3" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# 1. Debian packages -----------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  step "apt packages" "ok (${#APT_PACKAGES[@]} present)"
else
  is_root || fail "apt packages" "missing: ${missing[*]}" "run 'make setup' as root, or: sudo apt-get install ${missing[*]}"
  step "apt packages" "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer once, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q >/dev/null || fail "apt packages" "apt-get update failed" "check the Debian mirror configuration in /etc/apt/sources.list*"
  apt-get install -y -q "${missing[@]}" >/tmp/mep-apt.log 2>&1 \
    || fail "apt packages" "apt-get install failed (log: /tmp/mep-apt.log)" "apt-get install ${missing[*]}"
fi

# 2. Kernel headers for bcc ----------------------------------------------------
# bcc compiles against /lib/modules/$(uname -r)/build; a custom kernel has no such
# directory, so point it at Debian's newest linux-headers (BCC_KERNEL_SOURCE alone
# does not work with bcc 0.26 here).
kdir=/lib/modules/$(uname -r)
if [ -e "$kdir/build/include" ]; then
  step "kernel headers" "ok ($(readlink -f "$kdir/build"))"
else
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
  common=${hdr%-amd64}-common
  [ -n "$hdr" ] && [ -d "$common" ] || fail "kernel headers" "no /usr/src/linux-headers-*-amd64" "apt-get install linux-headers-amd64"
  is_root || fail "kernel headers" "$kdir/build is missing" "as root: ln -s $hdr $kdir/build"
  mkdir -p "$kdir"
  ln -sfn "$hdr" "$kdir/build"
  ln -sfn "$common" "$kdir/source"
  step "kernel headers" "linked $kdir/build -> $hdr and source -> $common"
fi

# 3. bpffs ---------------------------------------------------------------------
if mountpoint -q /sys/fs/bpf && [ "$(stat -f -c %T /sys/fs/bpf)" = "bpf_fs" ]; then
  step "bpffs" "ok (/sys/fs/bpf)"
elif is_root; then
  mount -t bpf bpf /sys/fs/bpf || fail "bpffs" "mount failed" "mount -t bpf bpf /sys/fs/bpf"
  step "bpffs" "mounted /sys/fs/bpf"
else
  fail "bpffs" "/sys/fs/bpf is not a bpf filesystem" "as root: mount -t bpf bpf /sys/fs/bpf"
fi

# 4. venv with Debian's bcc visible ---------------------------------------------
if [ -x "$VENV/bin/python" ]; then
  step "venv" "ok ($VENV)"
else
  /usr/bin/python3 -m venv --system-site-packages "$VENV" \
    || fail "venv" "cannot create $VENV" "apt-get install python3-venv"
  step "venv" "created $VENV (--system-site-packages, for Debian's python3-bpfcc)"
fi
"$VENV/bin/python" -c 'import bcc' 2>/dev/null \
  || fail "bcc import" "'import bcc' fails in $VENV" "apt-get install python3-bpfcc (never pip-install 'bcc': that PyPI name is another project)"
step "bcc import" "ok"

# 5. Python packages -------------------------------------------------------------
stamp="$VENV/.mep-install-stamp"
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  step "pip install" "ok (pyproject unchanged)"
else
  step "pip install" "installing -e '.[test,bench]' (a minute on a fresh venv)"
  quiet_pip install -q 'setuptools>=68' wheel 'Cython>=3.0' \
    || fail "pip install" "build tools did not install" "check PyPI reachability (pip config list)"
  quiet_pip install -q --no-build-isolation -e '.[test,bench]' \
    || fail "pip install" "project did not install" "$VENV/bin/pip install -e '.[test,bench]' and read the error"
  echo "$want" > "$stamp"
fi

# 6. Cython fast path ------------------------------------------------------------
so=$(ls mep/dataplane/_fastpath*.so 2>/dev/null | head -n 1 || true)
newest_src=$(ls -t mep/dataplane/_fastpath.pyx mep/dataplane/*.pxd mep/dataplane/ebpf/reasons.h setup.py 2>/dev/null | head -n 1 || true)
if [ -n "$so" ] && [ "$so" -nt "$newest_src" ]; then
  step "cython build" "ok ($so)"
else
  "$VENV/bin/python" setup.py -q build_ext --inplace >/tmp/mep-cython.log 2>&1 \
    || fail "cython build" "build_ext failed (log: /tmp/mep-cython.log)" "apt-get install build-essential python3-dev; then make setup"
  step "cython build" "built $(ls mep/dataplane/_fastpath*.so)"
fi

# 7. generated gRPC code ----------------------------------------------------------
# Messages only (mm5_pb2.py + .pyi for mypy): the server and client register
# and call the RPCs from the proto's service descriptor (mep/mm5/rpc.py), so
# no untyped *_pb2_grpc.py is generated. The files are not in git.
if [ -f mep/mm5/mm5.proto ]; then
  if [ mep/mm5/mm5_pb2.py -nt mep/mm5/mm5.proto ] && [ mep/mm5/mm5_pb2.pyi -nt mep/mm5/mm5.proto ]; then
    step "grpc codegen" "ok"
  else
    "$VENV/bin/python" -m grpc_tools.protoc -Imep/mm5=mep/mm5 --python_out=. --pyi_out=. mep/mm5/mm5.proto \
      || fail "grpc codegen" "protoc failed" "$VENV/bin/pip install grpcio-tools"
    step "grpc codegen" "generated mep/mm5/mm5_pb2*.py"
  fi
fi
step "done" "run 'make test' or 'make demo'"

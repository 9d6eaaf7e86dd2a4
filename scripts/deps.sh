#!/usr/bin/env bash
# Installs what flannelu's tests, demo and benchmarks need on a fresh Debian
# machine that already has Go: etcd (a real server for the tests), iperf3,
# ping, tcpdump, iproute2, iptables (--ip-masq and the forward rules),
# nftables (the same rules with "EnableNFTables": true, through knftables),
# promtool (checks /metrics; Debian ships it only in the prometheus
# package), the real CNI chain pods are created with: Debian's
# containernetworking-plugins (bridge, host-local, portmap, loopback in
# /usr/lib/cni), the flannel CNI plugin and cnitool (built into bin/cni),
# gcc (cgo for flanneld's udp backend, which scripts/flanneld.sh builds for
# the bench) and perf (the bench's -perf counts). Does nothing for what is
# already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd    >/dev/null || need+=(etcd-server)
command -v iperf3  >/dev/null || need+=(iperf3)
command -v ping    >/dev/null || need+=(iputils-ping)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v ip      >/dev/null || need+=(iproute2)
command -v ethtool >/dev/null || need+=(ethtool)
command -v bridge  >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v nft     >/dev/null || need+=(nftables)
command -v promtool >/dev/null || need+=(prometheus)
[ -x /usr/lib/cni/bridge ] || [ -x /opt/cni/bin/bridge ] || need+=(containernetworking-plugins)
command -v gcc     >/dev/null || need+=(gcc libc6-dev)
command -v perf    >/dev/null || need+=(linux-perf)
command -v wg      >/dev/null || need+=(wireguard-tools)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# etcd-server's package starts a system etcd on 127.0.0.1:2379; the tests
# start their own etcd in namespaces and do not need it.
# prometheus is installed for promtool alone: stop the server its package
# starts and keep it from starting at boot (only when we just installed it).
if [[ " ${need[*]} " == *" prometheus "* ]]; then
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi
go mod download

# go_tool DIR BIN PACKAGE VERSION: builds PACKAGE@VERSION into DIR unless the
# binary there is already that version (GOBIN keeps it out of ~/go/bin).
# The flannel plugin is the one kube-flannel shipped before it moved to
# flannel-io/cni-plugin (which the module proxy does not serve).
go_tool() {
  local bin="$1/$2"
  if [ -x "$bin" ] && go version -m "$bin" | grep -q "^[[:space:]]*mod[[:space:]].*[[:space:]]$4[[:space:]]"; then
    return
  fi
  echo "deps: building $3@$4 into $1"
  mkdir -p "$1"
  GOBIN="$PWD/$1" GOFLAGS=-buildvcs=false go install "$3@$4"
}
go_tool bin/cni flannel github.com/containernetworking/plugins/plugins/meta/flannel v0.9.1
go_tool bin/cni cnitool github.com/containernetworking/cni/cnitool v1.3.0
# Standalone wireguard-go (its command is named wireguard), at the version
# flannelu runs in-process (go.mod), so that the two differ only in what
# surrounds the library.
go_tool bin/wireguard-go wireguard golang.zx2c4.com/wireguard "$(go list -m -f '{{.Version}}' golang.zx2c4.com/wireguard)"

#!/usr/bin/env bash
# Installs what flannelu's tests, demo and benchmarks need on a fresh Debian
# machine that already has Go: etcd (a real server for the tests), iperf3,
# ping, tcpdump, iproute2, iptables (--ip-masq and the forward rules). Does
# nothing for what is already there.
set -euo pipefail

need=()
command -v etcd    >/dev/null || need+=(etcd-server)
command -v iperf3  >/dev/null || need+=(iperf3)
command -v ping    >/dev/null || need+=(iputils-ping)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v ip      >/dev/null || need+=(iproute2)
command -v ethtool >/dev/null || need+=(ethtool)
command -v bridge  >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)

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
go mod download

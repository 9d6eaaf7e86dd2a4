#!/usr/bin/env bash
# Builds flanneld v0.20.2, the peer flannelu replaces, for the bench's
# flanneld-udp path (and its test): into bin/flanneld-v0.20.2 (ignored),
# only when that file is missing. It comes from the Go module proxy with
# cgo on: flannel's udp backend is C (backend/udp/proxy_amd64.c, called
# through cgo), so gcc must be there. GONOSUMDB (flannel's module
# only) is issue #12's recipe for fetching it.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v0.20.2
out=${1:-bin/flanneld-$version}
[ -x "$out" ] && exit 0
if ! command -v gcc >/dev/null; then
  echo "flanneld: needs gcc (cgo builds flannel's udp proxy); apt-get install gcc" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "flanneld: building flannel $version into $out (a few minutes the first time)"
CGO_ENABLED=1 GONOSUMDB=github.com/flannel-io/flannel GOBIN="$tmp" \
  go install -ldflags "-X github.com/flannel-io/flannel/version.Version=$version" \
  "github.com/flannel-io/flannel@$version"
mkdir -p "$(dirname "$out")"
mv "$tmp/flannel" "$out"

#!/usr/bin/env bash
# Builds the flanneld releases flannelu is tested against, each into
# bin/flanneld-<version> (ignored) only when that file is missing:
#   v0.20.2  the bench's flanneld-udp path and the mixed-cluster tests;
#   v0.28.9  today's kube-flannel: migration, rollback, nftables and flag
#            parity tests.
# Both come from the Go module proxy with cgo on (flannel's udp backend is C
# called through cgo), so gcc must be there. GONOSUMDB (flannel's module
# only) lets the go command fetch it without the checksum database.
#
#   scripts/flanneld.sh              both versions into bin/
#   scripts/flanneld.sh VERSION      one version into bin/flanneld-VERSION
#   scripts/flanneld.sh VERSION OUT  one version into OUT
set -euo pipefail
cd "$(dirname "$0")/.."
export GONOSUMDB=github.com/flannel-io/flannel

if ! command -v gcc >/dev/null; then
  echo "flanneld: needs gcc (cgo builds flannel's udp proxy); apt-get install gcc" >&2
  exit 1
fi

# Each build runs in a subshell, whose EXIT trap removes its temporary
# directory.
# v0.20.2 installs straight from the proxy.
build_v0_20() (
  out=$1
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  CGO_ENABLED=1 GOBIN="$tmp" \
    go install -ldflags "-X github.com/flannel-io/flannel/version.Version=v0.20.2" \
    "github.com/flannel-io/flannel@v0.20.2"
  mv "$tmp/flannel" "$out"
)

# v0.28.x: its module source, copied so it can be edited, without the
# tencentvpc backend (whose cloud SDK module the proxy does not serve).
build_module_copy() (
  version=$1 out=$2
  dir=$(go mod download -json "github.com/flannel-io/flannel@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || { echo "flanneld: go mod download gave no directory for $version" >&2; return 1; }
  tmp=$(mktemp -d)
  trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
  cp -r "$dir/." "$tmp/src"
  chmod -R u+w "$tmp/src"
  sed -i '/pkg\/backend\/tencentvpc"/d' "$tmp/src/main.go"
  (cd "$tmp/src" && CGO_ENABLED=1 go build -mod=mod -o "$tmp/flanneld" \
    -ldflags "-X github.com/flannel-io/flannel/pkg/version.Version=$version" .)
  mv "$tmp/flanneld" "$out"
)

build() {
  local version=$1 out=${2:-bin/flanneld-$1}
  [ -x "$out" ] && return 0
  mkdir -p "$(dirname "$out")"
  echo "flanneld: building flannel $version into $out (a few minutes the first time)"
  case $version in
    v0.20.*) build_v0_20 "$out" ;;
    *) build_module_copy "$version" "$out" ;;
  esac
}

if [ $# -gt 0 ]; then
  build "$@"
else
  build v0.20.2
  build v0.28.9
fi

#!/usr/bin/env bash
# The data path built for 386 and run on this amd64 kernel: recvmmsg,
# sendmmsg, GSO/GRO control messages and TUN writes with 32-bit structs.
# A kernel that cannot run 32-bit programs (IA32 emulation off, as on some
# microVMs: "exec format error") still gets every test binary compiled and
# vetted for 386, and says loudly that it did not run them.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
pkgs=(./internal/packet/ ./internal/offload/ ./routetable/ ./internal/drop/ ./internal/trace/ ./encap/ ./tun/ ./backend/udp/)
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'package main\nfunc main() {}\n' > "$probe/main.go"
GOARCH=386 $GO build -o "$probe/p" "$probe/main.go"
if "$probe/p" 2>/dev/null; then
  GOARCH=386 $GO test -count=1 -timeout 5m "${pkgs[@]}"
  exit
fi
echo "test-386: this kernel cannot run 32-bit programs (IA32 emulation is off: exec format error);"
echo "test-386: compiling and vetting the 386 test binaries instead of running them"
for p in "${pkgs[@]}"; do
  GOARCH=386 $GO test -c -o /dev/null "$p"
done
GOARCH=386 $GO vet "${pkgs[@]}"
echo "test-386: NOT RUN here (compiled and vetted only)"

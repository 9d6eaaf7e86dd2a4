# flannelu's image for deploy/kube-flannelu.yml: the daemon at
# /opt/bin/flannelu and the flannel CNI plugin at /flannel (the
# install-cni-plugin init container copies it to the node's /opt/cni/bin).
#   docker build -t <registry>/flannelu:<tag> --build-arg VERSION=<tag> .
# or make image IMAGE=<registry>/flannelu:<tag> VERSION=<tag> (docker or
# podman, whichever is installed).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# make release: static (no cgo), stripped, -trimpath; --version prints VERSION.
RUN make release VERSION=${VERSION} RELEASE_BIN=/out/flannelu
# The flannel CNI plugin (reads /run/flannel/subnet.env, delegates to
# bridge): containernetworking's v0.9.1. kube-flannel v0.28.9 ships
# flannel-io/cni-plugin v1.9.1, which the Go module proxy does not serve
# (403 for every version, checked 2026-12-07); see README, "Deploy".
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags "-s -w" \
    github.com/containernetworking/plugins/plugins/meta/flannel@v0.9.1

FROM debian:trixie-slim
# iptables for --ip-masq and the FORWARD rules, nft for EnableNFTables;
# cp for the init containers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables \
 && rm -rf /var/lib/apt/lists/*
# iptables in the host's mode, legacy or nft, picked at the first call
# (deploy/iptables-wrapper, kubernetes-sigs/iptables-wrappers' logic):
# Debian's iptables would always write nft rules, which a FORWARD policy
# of DROP set with iptables-legacy overrides.
COPY deploy/iptables-wrapper /usr/sbin/iptables-wrapper
RUN /usr/sbin/iptables-wrapper --install
COPY --from=build /out/flannelu /opt/bin/flannelu
COPY --from=build /out/flannel /flannel
ENTRYPOINT ["/opt/bin/flannelu"]

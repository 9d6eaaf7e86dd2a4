# flannelu's image for deploy/kube-flannelu.yml: the daemon at
# /opt/bin/flannelu and the flannel CNI plugin at /flannel (the
# install-cni-plugin init container copies it to the node's /opt/cni/bin).
#   docker build -t <registry>/flannelu:<tag> --build-arg VERSION=<tag> .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/flannelu ./cmd/flannelu
# The flannel CNI plugin (reads /run/flannel/subnet.env, delegates to bridge).
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags "-s -w" \
    github.com/containernetworking/plugins/plugins/meta/flannel@v0.9.1

FROM debian:trixie-slim
# iptables for --ip-masq and the FORWARD rules; cp for the init containers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/flannelu /opt/bin/flannelu
COPY --from=build /out/flannel /flannel
ENTRYPOINT ["/opt/bin/flannelu"]

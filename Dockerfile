# unplug in a container: a static binary on an empty image, run as a
# non-root user. Recipes (serve with --cap-add NET_ADMIN, --attach to a
# persistent TUN, rootless unplug run/exec) are in docs/containers.md.
#
#   podman build -t unplug .        (or docker build)
#   podman run --rm -it --cap-add NET_ADMIN --device /dev/net/tun unplug

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The image's whole tree is built in /out/root and copied in one COPY: a
# COPY of a directory copies its contents, not its own mode, so /tmp must
# come as part of a tree to keep 1777 (a non-root serve puts its control
# socket in /tmp/unplug-UID/).
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/root/unplug ./cmd/unplug
RUN mkdir -m 1777 /out/root/tmp

FROM scratch
COPY --from=build /out/root/ /
USER 65534:65534
ENTRYPOINT ["/unplug"]
CMD ["serve"]

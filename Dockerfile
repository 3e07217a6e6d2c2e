# unplug in a container: a static binary on an empty image, run as a
# non-root user. Recipes (serve with --cap-add NET_ADMIN, --attach to a
# persistent TUN, rootless unplug run/exec) are in docs/containers.md.
#
#   docker build -t unplug .
#   docker run --rm -it --user 0 --cap-add NET_ADMIN --device /dev/net/tun unplug serve

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/unplug ./cmd/unplug
# The image's only directory besides the binary: /tmp, where a non-root
# serve puts its control socket (/tmp/unplug-UID/control.sock).
RUN mkdir -m 1777 /out/tmp

FROM scratch
COPY --from=build /out/unplug /unplug
COPY --from=build /out/tmp /tmp
USER 65534:65534
ENTRYPOINT ["/unplug"]
CMD ["serve"]

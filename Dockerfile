# syntax=docker/dockerfile:1
#
# The `fleet` executable in a small runtime image. Build from the repository root:
#
#   docker build -t processfleet/fleet:dev .
#
# The image runs `fleet worker` by default; `docker run IMAGE simulator` or `IMAGE topology apply` run the
# other subcommands. Configuration is the worker's FLEET_* environment (README.md, WorkerConfiguration).

# ---- build stage: the Swift 6.3 toolchain on Debian 12 (bookworm), the same Debian as the runtime stage ----
FROM swift:6.3-bookworm AS build

RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get -q update \
    && apt-get -q install -y --no-install-recommends librabbitmq-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Resolve dependencies in their own layer so that a source change does not fetch them again.
COPY Package.swift ./
RUN swift package resolve

COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product fleet --static-swift-stdlib \
    && mkdir -p /staging \
    && cp "$(swift build -c release --show-bin-path)/fleet" /staging/fleet \
    && strip /staging/fleet

# ---- runtime stage: librabbitmq's shared library and nothing to compile with ----
# The Swift runtime and Foundation are linked statically; SQLite is compiled into the binary by sqlite-nio and
# TLS for PostgreSQL comes from the BoringSSL inside swift-nio-ssl, so librabbitmq4 (which brings libssl3 for
# amqps://) and the CA bundle are the only packages added.
FROM debian:bookworm-slim AS runtime

RUN export DEBIAN_FRONTEND=noninteractive \
    && apt-get -q update \
    && apt-get -q install -y --no-install-recommends librabbitmq4 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged user; Kubernetes' runAsNonRoot checks the numeric id.
RUN groupadd --system --gid 10001 fleet \
    && useradd --system --uid 10001 --gid fleet --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fleet

COPY --from=build /staging/fleet /usr/local/bin/fleet
COPY topology.json /etc/fleet/topology.json

ENV FLEET_TOPOLOGY=/etc/fleet/topology.json \
    FLEET_HTTP_HOST=0.0.0.0

USER 10001:10001
EXPOSE 9090

# bookworm-slim has no curl or wget; bash (always present) speaks just enough HTTP over /dev/tcp. The check
# passes only on a "200" status line from /health/live. Kubernetes ignores HEALTHCHECK and uses the Deployment's
# probes instead.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${FLEET_HTTP_PORT:-9090} && printf 'GET /health/live HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r -t 2 _ status _ <&3 && [ \"$status\" = 200 ]"]

ENTRYPOINT ["fleet"]
CMD ["worker"]

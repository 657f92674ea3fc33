# verdict: release build plus the ONNX Runtime library from its PyPI wheel.
#   docker build -t verdict:0.1.0 .
# Layers, cheapest to rebuild last: the ONNX Runtime library, then every dependency (built
# against placeholder sources, so it is cached until Cargo.toml or Cargo.lock changes), then
# verdict itself.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY scripts/fetch-ort.sh scripts/fetch-ort.sh
RUN PIP_BREAK_SYSTEM_PACKAGES=1 scripts/fetch-ort.sh
# The image carries no debug info or symbols (Cargo.toml keeps line tables for backtraces).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in spine rules avro window state_memory feast decode rss; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --bin verdict \
 && rm -rf src benches
COPY src src
COPY benches benches
# Embedded at build time (include_str!): the defaults, the demo config, the drift schema.
COPY config config
COPY schemas schemas
# The placeholder build left newer timestamps on verdict's own artefacts: touch the sources.
RUN touch src/lib.rs src/main.rs && cargo build --release --bin verdict

FROM debian:bookworm-slim
# curl for the HEALTHCHECK; libz is librdkafka's (the binary's only other library is glibc).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin verdict
WORKDIR /opt/verdict
COPY --from=build /src/target/release/verdict /usr/local/bin/verdict
COPY --from=build /src/.cache/onnxruntime /opt/verdict/.cache/onnxruntime
COPY models /opt/verdict/models
COPY schemas /opt/verdict/schemas
COPY config /opt/verdict/config
COPY ops/rules /opt/verdict/ops/rules
# verdict writes nothing to its filesystem (state is in Redis, offsets in Kafka), so the
# root filesystem can be mounted read-only (the Kubernetes manifest does).
ENV VERDICT_HOME=/opt/verdict
USER 10001:10001
EXPOSE 9464
# /healthz fails once the pipeline cannot go on (a thread ended, an output refused under
# on_refused = stop); verdict then exits by itself, so this mostly reports, it rarely kills.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl --fail --silent --max-time 2 http://127.0.0.1:9464/healthz >/dev/null || exit 1
ENTRYPOINT ["verdict"]
CMD ["run", "--config", "config/demo.toml"]

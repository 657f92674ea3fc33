# verdict: release build plus the ONNX Runtime library from its PyPI wheel.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN PIP_BREAK_SYSTEM_PACKAGES=1 scripts/fetch-ort.sh && cargo build --release --bin verdict

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/verdict
COPY --from=build /src/target/release/verdict /usr/local/bin/verdict
COPY --from=build /src/.cache/onnxruntime /opt/verdict/.cache/onnxruntime
COPY models /opt/verdict/models
COPY schemas /opt/verdict/schemas
COPY config /opt/verdict/config
ENV VERDICT_HOME=/opt/verdict
EXPOSE 9464
ENTRYPOINT ["verdict"]
CMD ["run", "--config", "config/demo.toml"]

# InfraChat image: one binary, roles chosen by config. Built from Debian bookworm packages only.
#   docker build -t infrachat .
#   docker run -e INFRACHAT_DATABASE_URL=... -e INFRACHAT_GRPC_LISTEN_ADDRESS=0.0.0.0:7400 infrachat
FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh
COPY . .
RUN BUILD_DIR=/build BUILD_TYPE=Release scripts/build.sh infrachatd infrachat

FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libpqxx-6.4 libyaml-cpp0.7 libsodium23 libspdlog1.10 \
      libfmt9 libedit2 libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 infrachat
COPY --from=build /build/src/exe/infrachatd /build/src/client/infrachat /usr/local/bin/
COPY config/ /etc/infrachat/
USER infrachat
EXPOSE 7400
ENTRYPOINT ["infrachatd", "--config", "/etc/infrachat/all-in-one.yaml"]

# InfraChat image: one binary, `infrachatd`, whose roles come from its config (all-in-one by
# default; role-split tiers set INFRACHAT_ROLES and the peers, see README "Container image"), and
# the `infrachat` client, which also serves as the health probe. Debian bookworm packages only.
#   podman build --format docker -t infrachat/infrachatd:dev .
#   (`docker build` should work as well; only podman is tested here)
#   podman run --network host -e INFRACHAT_DATABASE_URL=... infrachat/infrachatd:dev
# scripts/container-test.sh builds it from a fresh machine (the base image included) and runs it.
# --format docker: the OCI image format has no HEALTHCHECK, so podman would drop it.

# ---- build: compilers and -dev packages, then the sources ----------------------------------------
FROM debian:bookworm-slim AS build
# The dependency layer comes first and depends on setup.sh alone, so editing a source file never
# reinstalls packages.
COPY scripts/setup.sh /tmp/setup.sh
RUN /tmp/setup.sh --build-only && rm -rf /var/lib/apt/lists/* /tmp/setup.sh
# Where the sources and the build tree live, and ccache's settings. The defaults suit any build;
# scripts/container-test.sh passes the host's own paths, LANG and CCACHE_* and mounts the host's
# ccache directory, so the compiler command lines equal the host's and every object the host
# has already compiled is a cache hit (a cold compile takes many minutes on 2 cores).
ARG SRC_DIR=/src
ARG BUILD_DIR=/src/build
ARG CCACHE_DIR=/ccache
ARG CCACHE_BASEDIR
ARG CCACHE_NOHASHDIR
ARG LANG
ARG LC_ALL
ARG LC_CTYPE
ARG LC_MESSAGES
# Only what the compile reads, so a change to docs, tests or deploy files does not rebuild.
# The COPY destinations are fixed: buildah's layer cache keys a COPY on its unexpanded text, so
# `COPY x ${SRC_DIR}/` reused a layer built with another SRC_DIR and the files were not where
# the build looked (a CI run failed so). The build step moves them to SRC_DIR itself.
COPY CMakeLists.txt /staged-src/
COPY scripts/build.sh /staged-src/scripts/
COPY proto /staged-src/proto
COPY include /staged-src/include
COPY src /staged-src/src
# RelWithDebInfo (-O2), as the tests build and prove it; the debug info is stripped below.
# /ccache is a cache mount that outlives the layer (unless CCACHE_DIR points at a volume).
RUN --mount=type=cache,target=/ccache,id=infrachat-ccache \
    mkdir -p "${SRC_DIR}" && cp -a /staged-src/. "${SRC_DIR}/" && rm -rf /staged-src \
 && BUILD_TESTING=OFF "${SRC_DIR}/scripts/build.sh" infrachatd infrachat \
 && install -D -s -m 0755 "${BUILD_DIR}/src/exe/infrachatd" /out/usr/local/bin/infrachatd \
 && install -D -s -m 0755 "${BUILD_DIR}/src/client/infrachat" /out/usr/local/bin/infrachat \
 && rm -rf "${BUILD_DIR}"  # the objects are in ccache; a layer of them would only fill the disk

# ---- runtime: the shared libraries the two binaries load, nothing else ---------------------------
FROM debian:bookworm-slim
# The runtime packages of what `ldd` lists for infrachatd and infrachat (libcpp-jwt, CLI11, asio
# and nlohmann-json are header-only; the rest come as their dependencies), and ca-certificates for
# TLS to servers with public certificates. The check after the copy fails the build when a
# library is missing.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libpqxx-6.4 libpq5 libyaml-cpp0.7 libsodium23 \
      libspdlog1.10 libfmt9 libedit2 libssl3 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      libcurl4 ca-certificates >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin infrachat
COPY --from=build /out/ /
RUN if ldd /usr/local/bin/infrachatd /usr/local/bin/infrachat | grep 'not found'; then \
      echo "a shared library is missing from the runtime stage (above)" >&2; exit 1; fi
COPY config/ /etc/infrachat/
# Listen on every interface of the container (the config's default is loopback only). The health
# check asks this port; set INFRACHAT_GRPC_LISTEN_ADDRESS, not --set, to move it.
ENV INFRACHAT_GRPC_LISTEN_ADDRESS=0.0.0.0:7400
USER 10001:10001
EXPOSE 7400
# grpc.health.v1 on the public port: SERVING while the daemon serves, NOT_SERVING from the start
# of a SIGTERM drain. Every role set serves it there (auth and shard tiers too).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD infrachat health --server "127.0.0.1:${INFRACHAT_GRPC_LISTEN_ADDRESS##*:}" --call-timeout-s 4
# SIGTERM drains (in-flight sends answered, streams told to reconnect) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["infrachatd"]
CMD ["--config", "/etc/infrachat/all-in-one.yaml"]

# parkd container image: build with Rust, run on debian-slim as an unprivileged user.
#   docker build -t parkd .
#   docker run --network host parkd --listen 192.0.2.10:5070 --outbound-proxy sip:192.0.2.10:5060
# See docker-compose.yml for parkd beside Kamailio.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin parkd

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin parkd
COPY --from=build /src/target/release/parkd /usr/local/bin/parkd
# Hold music goes out through sendto here (a non-root user has no CAP_NET_RAW for the raw-socket sender,
# and Docker's default seccomp profile refuses io_uring). A file capability is deliberately not set: with
# `--cap-drop ALL` (e.g. Kubernetes "restricted") the binary would then fail to start at all.
# State that outlives the process (the generated HTTP API token and the attendant page link, see docs/api.md):
# ./parkd-state under the working directory, i.e. /var/lib/parkd/parkd-state. Mount a volume on /var/lib/parkd to
# keep the token across container re-creation; `docker exec <c> cat parkd-state/attendant-link` shows the link.
RUN mkdir -m 0700 /var/lib/parkd && chown parkd:parkd /var/lib/parkd
WORKDIR /var/lib/parkd
USER parkd
# SIP (UDP and TCP) and the default RTP range (one even port per call leg; open it in your firewall).
EXPOSE 5060/udp 5060/tcp 10000-10999/udp
# parkd answers OPTIONS itself (also while draining); --probe sends one and exits 0 on 200.
# PARKD_PROBE must name the address parkd listens on when that is not 127.0.0.1:5060.
ENV PARKD_PROBE=127.0.0.1:5060
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 CMD ["/bin/sh", "-c", "exec parkd --probe \"$PARKD_PROBE\""]
ENTRYPOINT ["parkd"]
CMD ["--listen", "0.0.0.0:5060", "--advertise", "127.0.0.1"]

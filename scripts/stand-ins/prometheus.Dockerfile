# Stand-in for the official prom/prometheus image, from Debian's prometheus package, where no
# image registry can be reached (scripts/docker-setup builds it as jwt-split-prometheus:bookworm).
# Like the official image: the prometheus binary as the entrypoint, the configuration in
# /etc/prometheus, data in /prometheus, not run as root, promtool on PATH.
ARG BASE=jwt-split-prometheus:base-raw
FROM ${BASE}

RUN mkdir -p /prometheus && chown prometheus:prometheus /prometheus
VOLUME ["/prometheus"]
WORKDIR /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

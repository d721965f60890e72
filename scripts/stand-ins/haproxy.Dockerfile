# Stand-in for the official haproxy image, from Debian's haproxy package, where no image
# registry can be reached (scripts/docker-setup builds it as jwt-split-haproxy:bookworm).
# Like the official image it reads /usr/local/etc/haproxy/haproxy.cfg and runs as haproxy.
ARG BASE=jwt-split-services:base-raw
FROM ${BASE}

RUN mkdir -p /usr/local/etc/haproxy
USER haproxy
# SIGUSR1: a soft stop (finish the requests in flight), as in the official image.
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]

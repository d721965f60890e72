# Stand-in for the official redis image, from Debian's redis-server package, where no image
# registry can be reached (scripts/docker-setup builds it as jwt-split-redis:bookworm).
ARG BASE=jwt-split-services:base-raw
FROM ${BASE}

RUN mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no"]

# Stand-in for the official postgres image, from Debian's postgresql package, where no image
# registry can be reached (scripts/docker-setup builds it as jwt-split-postgres:bookworm).
# It offers what compose.scale.yaml uses of the official image: POSTGRES_USER, POSTGRES_DB and
# POSTGRES_PASSWORD[_FILE] on first start, data in /var/lib/postgresql/data, pg_isready.
ARG BASE=jwt-split-services:base-raw
FROM ${BASE}

# Debian keeps the server programs under /usr/lib/postgresql/<version>/bin, off PATH.
RUN for program in /usr/lib/postgresql/*/bin/*; do ln -s "$program" /usr/local/bin/; done \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown postgres:postgres /var/lib/postgresql/data /var/run/postgresql \
    && chmod 0700 /var/lib/postgresql/data
COPY postgres-entrypoint /usr/local/bin/postgres-entrypoint

ENV PGDATA=/var/lib/postgresql/data
VOLUME ["/var/lib/postgresql/data"]
USER postgres
EXPOSE 5432
# SIGINT: a fast shutdown, as in the official image.
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint"]
CMD ["postgres"]

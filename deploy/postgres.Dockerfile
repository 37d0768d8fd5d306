# A hospital's PostgreSQL 15, on a Debian bookworm base made offline (`make postgres-image`), or on
# debian:bookworm-slim where a registry is reachable (`--build-arg BASE=debian:bookworm-slim` then
# also needs `apt-get install postgresql-15`; the offline base already holds it).
ARG BASE=medsyft-postgres-base:15
FROM ${BASE}
COPY postgres-entrypoint.sh /usr/local/bin/medsyft-postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/medsyft-postgres"]

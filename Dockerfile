# pfs as an image: `pfs serve` on 0.0.0.0:8080 as a non-root user.
#
# Build it with `bash deploy/build-image.sh` (tag pfs:local), which first puts the wheels
# of pfs and of its dependencies, made on the host for the image's Python, into a build
# context of their own (build/deploy/context: wheels/deps, wheels/pfs). Nothing is
# downloaded while the image builds: the base image needs no pip and no network.
#
#   docker build -f Dockerfile --build-arg BASE=pfs-python-base:local -t pfs:local build/deploy/context
#
# BASE is any Debian-like image with python3 (and `useradd`); the default is the base that
# scripts/docker-setup.sh makes from Debian's packages, since no registry is reachable here.
ARG BASE=pfs-python-base:local

# ---- build: a virtualenv in /opt/pfs, installed from the wheels by a pip run from its wheel
FROM ${BASE} AS build
# The dependencies first, in a layer of their own: editing pfs does not reinstall them.
COPY wheels/deps/ /wheels/deps/
RUN set -eu; \
    pip=$(ls /wheels/deps/pip-*.whl); \
    python3 -m venv --without-pip /opt/pfs; \
    ls /wheels/deps/*.whl | grep -v '/pip-' \
      | xargs /opt/pfs/bin/python "$pip/pip" install --no-index --find-links /wheels/deps \
          --no-cache-dir --disable-pip-version-check --no-warn-script-location --quiet
COPY wheels/pfs/ /wheels/pfs/
RUN set -eu; \
    pip=$(ls /wheels/deps/pip-*.whl); \
    /opt/pfs/bin/python "$pip/pip" install --no-index --find-links /wheels/deps --no-cache-dir \
      --disable-pip-version-check --no-warn-script-location --quiet /wheels/pfs/*.whl; \
    /opt/pfs/bin/python "$pip/pip" check --disable-pip-version-check; \
    /opt/pfs/bin/pfs --help >/dev/null

# ---- run: the base image plus the virtualenv; no wheels, no pip, no compilers
FROM ${BASE}
RUN groupadd --system --gid 10001 pfs \
 && useradd --system --uid 10001 --gid pfs --home-dir /var/lib/pfs --no-create-home --shell /usr/sbin/nologin pfs \
 && mkdir -p /var/lib/pfs \
 && chown pfs:pfs /var/lib/pfs \
 && chmod 0750 /var/lib/pfs
COPY --from=build /opt/pfs /opt/pfs
ENV PATH=/opt/pfs/bin:$PATH \
    PFS_DATA_DIR=/var/lib/pfs \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8
USER pfs
WORKDIR /var/lib/pfs
EXPOSE 8080
# Healthy once /ready answers 200 (its stores answer; /ping is liveness only); the stdlib
# only, since the image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/ready', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["pfs"]
CMD ["serve", "--addr", "0.0.0.0:8080"]

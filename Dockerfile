# ganforge: one image for the API (`ganforge serve`, the default) and the
# Celery workers (`ganforge worker`). See docker-compose.yml for the fleet.
#
#   docker build -t ganforge:latest .
#
# Optional, for hosts that keep wheels locally (both empty by default, so a plain
# Docker host installs from PyPI):
#   --build-arg PIP_FIND_LINKS="/wheels"                  (directories of wheels)
#   --build-arg PIP_EXTRA_INDEX_URL="file:///pypi/simple"  (PEP 503 indexes)
# The paths must exist inside the build, e.g. `podman build --volume /opt/pypi:/opt/pypi:ro`
# (see scripts/compose-smoke.sh). A CPU-only image, much smaller than the default CUDA
# build of torch: --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# (its torch 2.14.1+cpu satisfies the ==2.14.1 pin).
# podman: build with `--format docker`, or HEALTHCHECK is dropped (OCI images have none).
FROM python:3.11-slim

ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEX_URL=""

# A virtualenv rather than the system interpreter: works the same on the official
# image and on Debian-based stand-ins whose system Python is "externally managed".
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120

RUN groupadd --gid 10001 ganforge \
 && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin ganforge \
 && mkdir -p /data/store \
 && chown -R ganforge:ganforge /data \
 && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /src

# Dependencies first, read from the pyprojects alone, so editing the source does not
# reinstall torch: the server's, less ganforge-client (ours, in clients/python, installed
# from there below, never from an index), plus the client's own. Empty build args are
# unset: pip would read PIP_FIND_LINKS="" as a find-links location.
COPY pyproject.toml ./
COPY clients/python/pyproject.toml clients/python/
RUN [ -n "$PIP_FIND_LINKS" ] || unset PIP_FIND_LINKS; \
    [ -n "$PIP_EXTRA_INDEX_URL" ] || unset PIP_EXTRA_INDEX_URL; \
    set -e; \
    python -c "import re, tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); \
c = tomllib.load(open('clients/python/pyproject.toml', 'rb')); \
ours = lambda d: re.match(r'ganforge[-_.]client\b', d, re.I); \
server = [d for d in p['project']['dependencies'] if not ours(d)]; \
print('\n'.join(p['build-system']['requires'] + server + c['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && cat /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the client and the server, in one command; their dependencies are already in place.
COPY . ./
RUN pip install --no-deps --no-build-isolation ./clients/python . \
 && rm -rf /src/build /src/*.egg-info /src/clients/python/build /src/clients/python/*.egg-info

ENV GANFORGE_DATA_DIR=/data \
    GANFORGE_HOST=0.0.0.0 \
    GANFORGE_PORT=8000 \
    HOME=/data

USER ganforge
WORKDIR /data
EXPOSE 8000

# Liveness of the API. python's urllib, since slim images have no curl. The worker
# service overrides this in docker-compose.yml (it serves no HTTP).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GANFORGE_PORT', '8000'), timeout=4)" || exit 1

CMD ["ganforge", "serve"]

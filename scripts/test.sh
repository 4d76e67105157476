#!/usr/bin/env bash
# Runs the whole test suite. The tests start real peers (Knot DNS, promtool from
# Prometheus); this script installs them from Debian's packages when they are missing
# (needs root or sudo), then runs `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(knot knot-dnsutils prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test peers: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cargo test --all-targets "$@"

#!/bin/sh
# Builds the Debian package (cargo-deb) and tests it as an operator installs it: lintian,
# dpkg -i, validate the installed configuration, systemd-analyze verify and security on
# the installed unit, start the installed binary as the package's user with the
# installed configuration and scrape it (promtool check metrics), dpkg --purge, and
# nothing left but what policy keeps (the system user). Run as root; .ci/run runs it.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/package.sh installs and purges a package: run it as root" >&2; exit 2; }
agent=
# Whatever fails, nothing stays installed or running.
cleanup() {
    [ -n "$agent" ] && kill "$agent" 2>/dev/null || true
    dpkg -s coexistd >/dev/null 2>&1 && dpkg --purge coexistd >/dev/null 2>&1 || true
}
trap cleanup EXIT

command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
command -v lintian >/dev/null || { apt-get update -qq && apt-get install -y -qq lintian >/dev/null; }

cargo build --release
mkdir -p target/package
rm -f target/package/*.deb
target/release/coexistd generate man | gzip -9n > target/package/coexistd.1.gz
target/release/coexistd generate bash > target/package/coexistd.bash
target/release/coexistd generate zsh > target/package/_coexistd
cargo deb --no-build --strip --output target/package/
deb=$(ls target/package/coexistd_*.deb)
echo "package: $deb"

# Lintian: errors and warnings fail; the tags it still reports are explained in
# debian/lintian.md and overridden in the package (usr/share/lintian/overrides).
lintian --fail-on error,warning --tag-display-limit 0 "$deb"

dpkg -i "$deb"
getent passwd coexistd >/dev/null
test "$(stat -c %U:%G /etc/coexistd)" = root:coexistd
/usr/bin/coexistd --version
# The package says which commit it was built from (when built from a git checkout).
if rev=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    /usr/bin/coexistd --version | grep -q "revision: $rev" || { echo "--version does not name $rev" >&2; exit 1; }
fi
/usr/bin/coexistd validate --config /etc/coexistd/coexistd.toml
systemd-analyze verify /usr/lib/systemd/system/coexistd.service
exposure=$(systemd-analyze security --offline=yes /usr/lib/systemd/system/coexistd.service 2>/dev/null \
    | sed -n 's/.*Overall exposure level for coexistd.service: \([0-9.]*\).*/\1/p')
echo "systemd-analyze security: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 2.0) }'
test -s /usr/share/man/man1/coexistd.1.gz
man -l /usr/share/man/man1/coexistd.1.gz 2>/dev/null | grep -q "report" || zcat /usr/share/man/man1/coexistd.1.gz | grep -q report
test -s /usr/share/bash-completion/completions/coexistd
test -s /usr/share/zsh/vendor-completions/_coexistd
test -s /usr/share/coexistd/prometheus/coexistd.rules.yml

# The installed binary, as the package's user, with the installed configuration.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u coexistd -- /usr/bin/coexistd run --config /etc/coexistd/coexistd.toml \
    --web.listen-address "127.0.0.1:$port" >/dev/null 2>&1 &
agent=$!
ok=
for _ in $(seq 50); do
    if curl -sf "http://127.0.0.1:$port/metrics" -o target/package/metrics.txt; then ok=1; break; fi
    sleep 0.2
done
kill "$agent" 2>/dev/null || true
wait "$agent" 2>/dev/null || true
agent=
test -n "$ok"
grep -q '^coexist_build_info{' target/package/metrics.txt
if [ -n "${rev:-}" ]; then grep -q "revision=\"$rev\"" target/package/metrics.txt; fi
promtool check metrics < target/package/metrics.txt

dpkg --purge coexistd
if dpkg -s coexistd >/dev/null 2>&1; then echo "still installed" >&2; exit 1; fi
left=$(find /usr /etc /lib /var/lib -path /var/lib/dpkg -prune -o -name '*coexistd*' -print 2>/dev/null || true)
if [ -n "$left" ]; then echo "left after purge: $left" >&2; exit 1; fi
echo "package OK: installed, validated, verified, served, purged; the system user coexistd stays (policy)"

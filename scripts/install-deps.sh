#!/usr/bin/env bash
# install-deps.sh installs the system packages the tests need, when missing:
#   redis-server, redis-cli, redis-benchmark  (Debian: redis-server, redis-tools)
#   gcc + libc headers                         (go test -race needs cgo)
#
# It runs as root (or through sudo) with no stdin, waits for the dpkg/apt
# locks with a bounded timeout, and never leaves the system redis service
# running: tests start their own redis-server processes on random ports.
# It fails loudly when something cannot be installed.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need=()
for bin in redis-server redis-cli redis-benchmark; do
	command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
pkgs=()
if ((${#need[@]} > 0)); then
	pkgs+=(redis-server redis-tools)
fi
if ! command -v gcc >/dev/null 2>&1; then
	pkgs+=(gcc libc6-dev)
fi

if ((${#pkgs[@]} == 0)); then
	log "ok: $(redis-server --version | head -n1)"
	exit 0
fi

log "installing: ${pkgs[*]}"

command -v apt-get >/dev/null 2>&1 ||
	die "apt-get not found; install ${pkgs[*]} with your system's package manager"

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null 2>&1 || die "not root and no sudo; run as root or install ${pkgs[*]} yourself"
	SUDO=(sudo -n)
fi

export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)

# retry runs "$@" up to 5 times, for lock contention that the apt lock
# timeout does not cover (e.g. the lists lock during a concurrent update).
retry() {
	local i
	for i in 1 2 3 4 5; do
		if "$@" </dev/null; then
			return 0
		fi
		log "attempt $i failed: $*"
		sleep $((i * 10))
	done
	return 1
}

# Keep the package's postinst from starting the redis service. Debian's
# invoke-rc.d consults /usr/sbin/policy-rc.d; exit 101 means "don't start".
# Only add one when none exists, and remove what we added.
POLICY=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $POLICY ]]; then
	printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
	"${SUDO[@]}" chmod 0755 "$POLICY"
	added_policy=1
fi
cleanup() {
	if ((added_policy)); then
		"${SUDO[@]}" rm -f "$POLICY" || true
	fi
}
trap cleanup EXIT

retry "${APT[@]}" update -q || die "apt-get update failed"
retry "${APT[@]}" install -y -q --no-install-recommends "${pkgs[@]}" ||
	die "apt-get install ${pkgs[*]} failed"

# Belt and braces: if a service got started anyway, stop and disable it.
# Harmless when no service runs (containers without systemd, policy-rc.d).
if [[ " ${pkgs[*]} " == *" redis-server "* ]]; then
	"${SUDO[@]}" service redis-server stop >/dev/null 2>&1 || true
	if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
		"${SUDO[@]}" systemctl disable --now redis-server >/dev/null 2>&1 || true
	fi
	"${SUDO[@]}" update-rc.d redis-server disable >/dev/null 2>&1 || true
fi

for bin in redis-server redis-cli redis-benchmark; do
	command -v "$bin" >/dev/null 2>&1 || die "$bin still not on PATH after installing ${pkgs[*]}"
done
command -v gcc >/dev/null 2>&1 || die "gcc still not on PATH after installing ${pkgs[*]}"
log "installed: $(redis-server --version | head -n1)"

#!/usr/bin/env bash
# fuzz.sh runs every Fuzz* target in the module for a short time each.
# Targets are discovered with `go test -list '^Fuzz'` per package, so new
# fuzz tests are picked up without editing this script.
#
#   FUZZTIME   time per target (default 20s), any -fuzztime value
#   PKGS       package patterns to search (default ./...)
set -euo pipefail

FUZZTIME=${FUZZTIME:-20s}
PKGS=${PKGS:-./...}

cd "$(dirname "$0")/.."

# Only packages that have test files can hold fuzz targets.
mapfile -t pkgs < <(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' $PKGS)

ran=0
failed=()
for pkg in "${pkgs[@]}"; do
	[[ -n $pkg ]] || continue
	# -list prints the matching names, one a line, then an "ok" line.
	listing=$(go test -run '^$' -list '^Fuzz' "$pkg") || {
		printf '%s\n' "$listing"
		echo "fuzz: listing fuzz targets in $pkg failed" >&2
		exit 1
	}
	mapfile -t targets < <(printf '%s\n' "$listing" | grep -E '^Fuzz[A-Za-z0-9_]*$' || true)
	for t in "${targets[@]}"; do
		[[ -n $t ]] || continue
		echo "=== fuzz $pkg $t ($FUZZTIME)"
		if go test -run '^$' -fuzz "^${t}\$" -fuzztime "$FUZZTIME" "$pkg"; then
			ran=$((ran + 1))
		else
			failed+=("$pkg.$t")
		fi
	done
done

if ((${#failed[@]} > 0)); then
	echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
	echo "fuzz: failing inputs are saved under the package's testdata/fuzz/; re-run with go test -run=<Target>/<id>" >&2
	exit 1
fi
if ((ran == 0)); then
	echo "fuzz: no Fuzz* targets found in $PKGS"
else
	echo "fuzz: $ran target(s) ran for $FUZZTIME each, no failures"
fi

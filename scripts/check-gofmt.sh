#!/usr/bin/env bash
# check-gofmt.sh fails when a Go file in the module is not gofmt-formatted.
# testdata/ is skipped (the go tool ignores it; fixtures may be malformed on purpose).
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t files < <(find . -type d \( -name .git -o -name testdata -o -name vendor \) -prune -o -type f -name '*.go' -print)
((${#files[@]} > 0)) || exit 0
bad=$(gofmt -s -l "${files[@]}")
if [[ -n $bad ]]; then
	echo "gofmt: these files need formatting (run: gofmt -s -w <file>):" >&2
	printf '  %s\n' $bad >&2
	exit 1
fi

#!/usr/bin/env bash
# Sums the TRX files of a test run into one line: "N passed, N failed, N skipped".
# Exits non-zero if any test failed or no TRX was written.
set -euo pipefail
dir=${1:?results directory}
passed=0; failed=0; total=0; found=0
for trx in "$dir"/*.trx; do
  [ -f "$trx" ] || continue
  found=1
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -1)
  get() { printf '%s' "$counters" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  t=$(get total); p=$(get passed); f=$(get failed); e=$(get error); a=$(get aborted); to=$(get timeout)
  total=$((total + ${t:-0})); passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0} + ${e:-0} + ${a:-0} + ${to:-0}))
done
skipped=$((total - passed - failed))
[ $skipped -lt 0 ] && skipped=0
echo "$passed passed, $failed failed, $skipped skipped"
[ $found -eq 1 ] || { echo "no test results found in $dir" >&2; exit 1; }
[ $failed -eq 0 ]

#!/bin/sh
# Runs each C unit-test binary and sums their "N passed, N failed" lines.
passed=0; failed=0; rc=0
for t in "$@"; do
    out=$("$t" 2>&1); st=$?
    printf '%s\n' "$out" | grep -v '^[0-9]* passed, [0-9]* failed$'
    line=$(printf '%s\n' "$out" | grep '^[0-9]* passed, [0-9]* failed$' | tail -1)
    p=$(echo "$line" | cut -d' ' -f1); f=$(echo "$line" | cut -d' ' -f3)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
    if [ $st -ne 0 ] || [ -z "$line" ]; then
        echo "unit: $t exited $st"; rc=1; [ -z "$line" ] && failed=$((failed + 1))
    fi
done
echo "unit: $passed passed, $failed failed"
exit $rc

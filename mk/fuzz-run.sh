#!/bin/sh
# Runs libFuzzer targets. usage:
#   fuzz-run.sh FUZZ_DIR SECONDS BUILD TARGET...          run each for SECONDS
#   fuzz-run.sh --merge FUZZ_DIR 0 BUILD TARGET...        minimize into fuzz/corpus
# Prints one line per target: "fuzz NAME: N execs, C crashes, corpus K".
# Exits 1 when any target crashed; the inputs are in FUZZ_DIR/crashes/NAME/
# (copy each into fuzz/regress/NAME/ with the fix: `make check` replays them).
set -u
merge=0
if [ "$1" = "--merge" ]; then merge=1; shift; fi
dir=$1; secs=$2; build=$3; shift 3
py=${PYTHON_BASE:-python3}
rc=0
for t in "$@"; do
    work="$dir/work/$t"; crashes="$dir/crashes/$t"
    mkdir -p "$work" "$crashes"
    [ -d "fuzz/corpus/$t" ] && cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null
    [ -d "fuzz/regress/$t" ] && cp -n fuzz/regress/"$t"/* "$work"/ 2>/dev/null
    "$py" mk/fuzz-seeds.py "$t" "$work" "$build" 2>/dev/null
    if [ $merge = 1 ]; then
        # Seeds are made anew by every run (mk/fuzz-seeds.py, partly from
        # upstream's corpus in the build tree): only what the fuzzer found
        # is kept in the repository.
        new="$dir/merged/$t"; found="$dir/found/$t"; rm -rf "$new" "$found"; mkdir -p "$new" "$found"
        find "$work" -type f ! -name 'seed-*' -exec cp {} "$found"/ \;
        "$dir/fuzz_$t" -merge=1 "$new" "$found" >"$dir/$t.merge.log" 2>&1 || { echo "fuzz $t: merge failed, see $dir/$t.merge.log"; rc=1; continue; }
        rm -rf "fuzz/corpus/$t"; mkdir -p "fuzz/corpus/$t"; cp "$new"/* "fuzz/corpus/$t"/ 2>/dev/null
        echo "fuzz $t: corpus $(ls "fuzz/corpus/$t" | wc -l) (minimized into fuzz/corpus/$t)"
        continue
    fi
    log="$dir/$t.log"
    "$dir/fuzz_$t" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$crashes/" "$work" >"$log" 2>&1
    st=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    ncrash=$(ls "$crashes" | grep -c -E '^(crash|leak|timeout|oom|slow-unit)-' || true)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $t: ${execs:-0} execs, $ncrash crashes, corpus $(ls "$work" | wc -l)${cov:+ ($cov)}"
    if [ $st -ne 0 ] || [ "$ncrash" -gt 0 ]; then
        echo "fuzz $t: see $log and $crashes/" ; rc=1
    fi
done
exit $rc

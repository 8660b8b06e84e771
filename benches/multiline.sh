#!/usr/bin/env bash
# Multiline benchmark (issue 17): `logferry replay --dry-run` of a trace-heavy CRI corpus
# (benches/gen_traces.py: ~30 % of lines in Java stack traces), without a rule and with
# `--multiline java` on every file. Reports best user+sys CPU seconds, MB of log per
# CPU-second, peak RSS, and checks that the java run grouped exactly the traces written.
#
# Usage: bash benches/multiline.sh [--size-mb N] [--runs R] [--bin PATH]
#   --size-mb N   corpus size in MB (1e6 bytes); default 256 (bench-data/traces-<N>, reused)
#   --runs R      timed runs per mode, alternating; default 3
#   --bin PATH    this logferry binary instead of `cargo build --release`'s
set -euo pipefail

size_mb=256
runs=3
bin_arg=""
while (($#)); do
    case "$1" in
        --size-mb) size_mb="${2:?}"; shift 2 ;;
        --runs) runs="${2:?}"; shift 2 ;;
        --bin) bin_arg="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "multiline.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

cd "$(dirname "$0")/.."
source benches/common.sh
bin="${bin_arg:-target/release/logferry}"
[[ -n "$bin_arg" ]] || cargo build --release --quiet
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
print_machine bench-data

dir="$(pwd)/bench-data/traces-$size_mb"
if [[ ! -f "$dir/expected.json" ]]; then
    rm -rf "$dir"
    python3 benches/gen_traces.py --size-mb "$size_mb" --out "$dir" > /dev/null
fi
find "$dir/var/log/pods" -type f -exec cat {} + > /dev/null
bytes="$(json_get "$dir/expected.json" total_bytes)"
traces="$(json_get "$dir/expected.json" traces)"
trace_lines="$(json_get "$dir/expected.json" trace_lines)"
lines="$(json_get "$dir/expected.json" lines)"
echo "corpus: $dir ($bytes bytes, $lines lines, $traces traces of $trace_lines lines)"

declare -A best
for mode in none java; do best[$mode]=""; done
for _ in $(seq "$runs"); do
    for mode in none java; do
        args=(replay --dry-run)
        [[ $mode == java ]] && args+=(--multiline java)
        /usr/bin/time -f '%U %S %e %M' -o "$tmp/time" "$bin" "${args[@]}" "$dir/var/log/pods" 2> "$tmp/summary"
        read -r user sys wall rss < "$tmp/time"
        cpu="$(python3 -c "print(round($user + $sys, 3))")"
        if [[ -z "${best[$mode]}" ]] || python3 -c "import sys; sys.exit(0 if $cpu < ${best[$mode]%% *} else 1)"; then
            best[$mode]="$cpu $wall $rss"
        fi
        if [[ $mode == java ]]; then
            grep -q "multiline: $trace_lines lines grouped into $traces events" "$tmp/summary" \
                || { echo "multiline.sh: the java run did not group exactly the traces written:" >&2; cat "$tmp/summary" >&2; exit 1; }
        fi
    done
done
printf '\n%-6s %8s %12s %8s\n' rule cpu_s MB/cpu_s rss_MiB
for mode in none java; do
    read -r cpu wall rss <<< "${best[$mode]}"
    printf '%-6s %8s %12s %8s\n' "$mode" "$cpu" "$(python3 -c "print(round($bytes / 1e6 / $cpu))")" "$(python3 -c "print(round($rss / 1024, 1))")"
done
echo "(MB = 1e6 bytes of log files; CPU = user+sys of replay --dry-run, best of $runs; exact grouping checked)"

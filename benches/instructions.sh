#!/usr/bin/env bash
# Instructions per input byte under callgrind: a count that does not move with the
# machine's speed, to compare any two commits without timing noise (issue 25).
#
# Usage: bash benches/instructions.sh [--size-mb N] [--formats "docker cri"] [--bin PATH] [--top K]
#   --size-mb N   the corpus slice per format, bench-data/<format>-<N> from
#                 benches/gen_corpus.py (the replay mix: 70 % of messages 80-300 B, 25 %
#                 1-4 KiB, 5 % 20-100 KiB split by the runtime, JSON logs with escaped
#                 quotes among them); default 32
#   --formats F   default "docker cri"
#   --bin PATH    this logferry binary instead of `cargo build --release`'s
#   --top K       also list the K functions with the most instructions (inclusive of
#                 nothing: self cost), per format and mode; default 0
#
# Per format, two modes of `logferry replay -q`:
#   encode:  decode + rejoin + event JSON to stdout (> /dev/null)
#   dry-run: decode + rejoin only (--dry-run)
# and the instructions (callgrind's Ir, the whole process, start-up included: ~2 M)
# divided by the corpus's bytes of log files.
#
# Two counts per run. `per_byte`: as the process runs. `vec_copy`: the same run with
# glibc told to copy with vector instructions at every size
# (GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=...): above 2 KiB glibc's memcpy
# uses `rep movsb`, which callgrind counts once per byte moved, though the CPU moves
# 32-64 bytes per step; so copies of split messages and output buffers weigh ~1
# instruction per byte in the first count and ~0.05 in the second.
set -euo pipefail

size_mb=32
formats="docker cri"
bin_arg=""
top=0
while (($#)); do
    case "$1" in
        --size-mb) size_mb="${2:?}"; shift 2 ;;
        --formats) formats="${2:?}"; shift 2 ;;
        --bin) bin_arg="${2:?}"; shift 2 ;;
        --top) top="${2:?}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "instructions.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

cd "$(dirname "$0")/.."
source benches/common.sh
command -v valgrind > /dev/null || { echo "instructions.sh: valgrind is needed (apt install valgrind)" >&2; exit 69; }
bin="${bin_arg:-target/release/logferry}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

print_machine bench-data
[[ -n "$bin_arg" ]] || cargo build --release --quiet
printf '%-7s %-8s %12s %14s %10s %10s\n' format mode bytes instructions per_byte vec_copy
for format in $formats; do
    dir="$(corpus "$format" "$size_mb")"
    bytes="$(json_get "$dir/expected.json" total_bytes)"
    for mode in encode dry-run; do
        args=(replay -q "$dir/var/log/pods")
        [[ "$mode" == dry-run ]] && args=(replay -q --dry-run "$dir/var/log/pods")
        valgrind --tool=callgrind --callgrind-out-file="$tmp/out.$format.$mode" "$bin" "${args[@]}" > /dev/null 2> "$tmp/log"
        ir="$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/log")"
        [[ -n "$ir" ]] || { cat "$tmp/log" >&2; exit 1; }
        GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=4294967295 \
            valgrind --tool=callgrind --callgrind-out-file="$tmp/vec.$format.$mode" "$bin" "${args[@]}" > /dev/null 2> "$tmp/log"
        vec="$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/log")"
        [[ -n "$vec" ]] || { cat "$tmp/log" >&2; exit 1; }
        python3 -c "import sys; f, m, b, i, v = sys.argv[1:]; print(f'{f:<7} {m:<8} {int(b):12d} {int(i):14d} {int(i) / int(b):10.2f} {int(v) / int(b):10.2f}')" "$format" "$mode" "$bytes" "$ir" "$vec"
    done
done
if (( top > 0 )); then
    for f in "$tmp"/out.*; do
        echo
        echo "== ${f##*/out.}: the $top functions with the most instructions (self)"
        { callgrind_annotate --threshold=100 "$f" 2> /dev/null | grep -E "^ *[0-9,]+ \(" | head -n "$top"; } || true
    done
fi

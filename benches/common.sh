# Sourced by the benchmark scripts (run from the repository root): what they all do
# the same way — describe the machine, read the corpus's expected.json, generate or
# reuse a corpus.

# json_get FILE KEY: prints one top-level value of a JSON file.
json_get() {
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
}

# machine_facts DIR: sets machine_nproc, machine_cpu, machine_kernel, machine_mem,
# machine_fs (the file system DIR is on, with its mount options), rustc_version and
# commit (with a note when src/ or Cargo.toml differ from it).
machine_facts() {
    local cpu_model
    cpu_model="$(grep -m1 -E '^(model name|Model|cpu model)[[:space:]]*:' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)"
    machine_nproc="$(nproc)"
    machine_cpu="${cpu_model:-unknown}"
    machine_kernel="$(uname -srm)"
    machine_mem="$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    machine_fs="$(findmnt -n -o FSTYPE,OPTIONS -T "$1" 2>/dev/null | sed 's/ \+/ (/; s/$/)/' || echo unknown)"
    rustc_version="$(rustc --version)"
    commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' + uncommitted changes in src/ or Cargo.toml')"
}

# print_machine DIR: the "== machine" block, DIR's file system included.
print_machine() {
    machine_facts "$1"
    echo "== machine"
    echo "cpus:   $machine_nproc ($(nproc --all) online)"
    echo "cpu:    $machine_cpu"
    echo "kernel: $machine_kernel"
    echo "memory: $machine_mem"
    echo "fs:     $machine_fs at $1"
    echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
    echo "rustc:  $rustc_version"
    echo "commit: $commit"
    echo
}

# corpus FORMAT SIZE_MB: prints the path of bench-data/<format>-<size> (absolute),
# generating it with benches/gen_corpus.py unless its expected.json (written last)
# shows a complete one, and reads every file once so that runs read from the page
# cache. Progress goes to stderr.
corpus() {
    local dir
    dir="$(pwd)/bench-data/$1-$2"
    if [[ -f "$dir/expected.json" ]]; then
        echo "reusing $dir (expected.json present)" >&2
    else
        rm -rf "$dir"
        python3 benches/gen_corpus.py --format "$1" --size-mb "$2" --out "$dir" >&2
    fi
    find "$dir/var/log/pods" -type f -exec cat {} + > /dev/null
    echo "$dir"
}

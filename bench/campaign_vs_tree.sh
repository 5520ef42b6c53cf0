#!/usr/bin/env bash
# Campaign throughput of two trees of the harness, side by side (issue 16: 4x examples/s per worker).
#   bash bench/campaign_vs_tree.sh BASE_TREE [SECONDS] [ROUNDS]
# Runs `epoll-harness fuzz` against the reference server with 1 and 2 workers, alternating the
# base tree and this one, each in a fresh folder (a fresh database: nothing replayed), and prints
# one line per campaign: tree, workers, examples, examples/s, examples/s per worker.
set -euo pipefail
base=$(cd "$1" && pwd); seconds=${2:-60}; rounds=${3:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
run() {  # tree workers
    local tmp; tmp=$(mktemp -d /tmp/campaign-vs-XXXX)
    (cd "$tmp" && PYTHONPATH="$1" python -m harness.cli fuzz --server "$(PYTHONPATH="$1" python -c 'from harness.drive.process import reference_command; print(reference_command("lt"))')" \
        --workers "$2" --duration "${seconds}s" --db "$tmp/db" --out "$tmp/out" --confirm 0 --quiet >/dev/null 2>&1 || true)
    python - "$tmp/out/summary.json" "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
per = [round(w["examples_per_second"], 2) for w in s.get("per_worker", [])]
print(f"{'base' if 'base' in sys.argv[2] else 'this'} workers={sys.argv[3]} examples={s['examples']} per_s={s['examples_per_second']} per_worker={per}")
PY
    rm -rf "$tmp"
}
for _ in $(seq "$rounds"); do
    for workers in 1 2; do run "$base" "$workers"; run "$here" "$workers"; done
done

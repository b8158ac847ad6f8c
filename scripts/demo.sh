#!/usr/bin/env bash
# The main job on its embedded default: trace the bundled workload, which calls
# the simulated CUDA library from Python, and show what reached the database.
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-$PWD/ingero-demo.db}
LIB=$PWD/tests/simcuda/build/libcudart.so.12
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

rm -f "$DB" "$DB-wal" "$DB-shm"
echo "==> ingero trace --db $DB -- python tests/simcuda/workload.py ..."
$SUDO "$PWD/.venv/bin/ingero" trace --db "$DB" --cuda-lib "$LIB" -- \
    "$PWD/.venv/bin/python" tests/simcuda/workload.py --lib "$LIB" --threads 2 \
    --mallocs 8 --frees 6 --launches 200 --memcpys 12 --async-memcpys 12 --syncs 10 \
    --oom-bytes $((64 << 30)) --json /dev/null

echo
echo "==> per-op summary (sqlite3 $DB)"
"$PWD/.venv/bin/python" - "$DB" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
rows = db.execute(
    "SELECT o.name, COUNT(*), CAST(AVG(e.duration) / 1000 AS INT), MAX(e.duration) / 1000, "
    "SUM(e.ret_code != 0) FROM events e JOIN ops o ON o.source_id = e.source AND o.op_id = e.op "
    "GROUP BY o.name ORDER BY COUNT(*) DESC"
).fetchall()
print(f"{'op':<18} {'calls':>6} {'avg_us':>8} {'max_us':>8} {'errors':>6}")
for name, n, avg, mx, err in rows:
    print(f"{name:<18} {n:>6} {avg:>8} {mx:>8} {err:>6}")
PY

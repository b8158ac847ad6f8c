#!/usr/bin/env bash
# A newcomer's first minute: `ingero check` (is tracing possible here? it attaches
# real probes and sees them fire), then `ingero demo` (six GPU problems reproduced
# over the bundled simulated CUDA library, traced, and their root causes checked).
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${1:-$PWD/ingero-demo.db}
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

echo "==> ingero check"
$SUDO "$PWD/.venv/bin/ingero" check
echo
echo "==> ingero demo --db $DB"
rm -f "$DB" "$DB-wal" "$DB-shm"
$SUDO "$PWD/.venv/bin/ingero" demo --db "$DB"

#!/usr/bin/env bash
# Runs the structure-aware fuzz properties (tests/fuzz/fuzz.rs, tests/fuzz/sip_fuzz.rs) for
# DURATION (e.g. 10m, 2h) with a fresh random seed per round, and prints the cases run,
# cases per second and every finding (a failing case with its seed, to replay with
# PROPTEST_RNG_SEED=... cargo test --release --test fuzz).
#
#   scripts/fuzz.sh 10m [CASES_PER_ROUND]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:?usage: scripts/fuzz.sh DURATION [CASES_PER_ROUND]}
per_round=${2:-20000}
seconds=$(python3 -c "import re,sys; m=re.fullmatch(r'(\d+)([smh]?)', sys.argv[1]); print(int(m[1])*{'':1,'s':1,'m':60,'h':3600}[m[2]])" "$duration")
cargo build --release --tests -q
start=$(date +%s)
rounds=0
findings=0
cases=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while [ $(( $(date +%s) - start )) -lt "$seconds" ]; do
  seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
  if PROPTEST_RNG_SEED=$seed COEXISTD_FUZZ_CASES=$per_round PROPTEST_CASES=$per_round \
      cargo test --release -q --test fuzz >"$log" 2>&1; then
    :
  else
    findings=$((findings + 1))
    echo "FINDING with PROPTEST_RNG_SEED=$seed:"
    grep -E "panicked|minimal failing input|Test failed" "$log" | head -20
  fi
  rounds=$((rounds + 1))
  # 4 properties in tests/fuzz/fuzz.rs and 3 in tests/fuzz/sip_fuzz.rs, per_round cases each.
  cases=$((cases + 7 * per_round))
done
elapsed=$(( $(date +%s) - start ))
echo "fuzz: ${elapsed} s, ${rounds} rounds, ${cases} cases, $(( cases / (elapsed > 0 ? elapsed : 1) )) cases/s, ${findings} findings"
[ "$findings" -eq 0 ]

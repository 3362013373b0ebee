#!/usr/bin/env bash
# Installs what the tests need and runs every test. Idempotent; works on a fresh machine with a
# Rust toolchain (rustup) and Python 3 with venv and pip. The default build needs no libtorch;
# the measurement harness's tests need PyTorch 2.11.0, which scripts/setup-libtorch.sh installs
# into a virtualenv outside the repository (once; later runs reuse it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs), then rerun $0" >&2
  exit 1
fi
# rustfmt and clippy are part of the default rustup profile; add them where a minimal profile
# left them out.
if ! cargo fmt --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
  rustup component add clippy
fi

# Snapshots never update silently: a mismatch fails the run.
export INSTA_UPDATE=no
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

cargo fmt --all -- --check
# Lints, warnings as errors (the default build; clippy.toml lets unit tests unwrap, and each
# integration test file says so at its top).
cargo clippy --workspace --all-targets --locked -- -D warnings

log=$(mktemp)
trap 'rm -f "$log" "$log.py"' EXIT
# 1. The default build: no libtorch anywhere.
cargo test --workspace --locked 2>&1 | tee "$log"
# The benchmarks must keep compiling (they are run by hand: cargo bench -p costsim-model). Built
# with the tests' profile, on the dependencies just built: a release build of everything for them
# took 231 s of CI's 30 minutes on a 2-vCPU AMD EPYC (2026-11-30).
cargo test --workspace --benches --no-run --locked
# Doc comments' links must resolve, private items' too (a moved or renamed item leaves none
# dangling).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --locked -q
# So must the comparison with llm-analysis (run by hand; it installs llm-analysis, 217 MB, into
# a virtualenv of its own): its scripts are parsed here, not run.
bash -n scripts/bench-llm-analysis.sh
python3 -c "import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])" \
  scripts/bench/llm_analysis_per_config.py
# 2. The measurement harness (feature tch) on CPU with tiny models.
eval "$(scripts/setup-libtorch.sh)"
# 3. The ground-truth tracer of the real stack (transformers + peft), on tiny CPU configs.
echo "scripts/trace/test_trace.py: tracer rules and committed traces"
python3 scripts/trace/test_trace.py 2>&1 | grep -v -i -e "warn" -e "^\[transformers\]" | tee "$log.py"
n=$(sed -n 's/^Ran \([0-9]*\) tests\? in .*/\1/p' "$log.py")
grep -qx "OK" "$log.py" && echo "test result: ok. $n passed; 0 failed; (scripts/trace)" >> "$log"
# With libtorch: every test of the harness's crate, and of the CLI those that reach it (its unit
# tests, where `validate` and `calibrate` live, and tests/cli.rs, which measures on CPU through
# the binary). The CLI's other test files run the same code in both builds and ran above; under
# tch each command they spawn first loads libtorch, which took them 318 s of CI's 30 minutes
# against 50 s in the default build (2026-12-01, a 2-vCPU AMD EPYC). The harness's test files
# are listed from its folder, so a new one is never left out.
harness_tests=()
for f in validate/tests/*.rs; do harness_tests+=(--test "$(basename "$f" .rs)"); done
cargo test --locked -p costsim-validate -p costsim --features costsim/tch,costsim-validate/tch \
  --lib --bins --test cli "${harness_tests[@]}" 2>&1 | tee -a "$log"
# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

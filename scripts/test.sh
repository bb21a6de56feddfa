#!/usr/bin/env bash
# The README's test command: set up, then run the whole suite on CPU, offline.
# pytest's exit code 5 (no tests collected) is turned into a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 JAX_PLATFORMS=cpu
# Two workers, each taking whole files (module fixtures are built once): compiling and
# tracing is single-threaded, so the suite runs in about 60% of the serial time on 2 cores.
# Later options win: `bash scripts/test.sh -n 0` runs it serially.
.venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"

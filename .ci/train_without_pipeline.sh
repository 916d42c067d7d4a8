#!/usr/bin/env bash
# A training node's install: a fresh venv (no system site packages) with torch and '.[train]'
# only. It must lack Beam, numba, matplotlib and polars, train and evaluate the debug BLT from
# shards the main environment patched, and name the missing extra in one line for `patch`.
# Run from .ci/run after the main install; takes the main environment's `bltdata` from PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
work="${TMPDIR:-/tmp}/bltdata-train-without-pipeline"
rm -rf "$work"
mkdir -p "$work"
start=$SECONDS

# 1. Shards from the main environment (it has the pipeline extra): a slice of the demo corpus.
bltdata demo -o "$work/demo" --max-bytes 100000 --no-progress > "$work/demo.log"
echo "shards made by the main environment: $((SECONDS - start)) s"

# 2. The training install. pip finds torch's CPU wheel the way .ci/run's install does.
python -m venv "$work/venv"
"$work/venv/bin/pip" install -q torch==2.13.0
"$work/venv/bin/pip" install -q "$repo[train]"
echo "fresh [train] venv installed: $((SECONDS - start)) s"
cd "$work"  # so that `import bltdata` is the installed package, not the source tree
for module in apache_beam numba matplotlib polars; do
    if "$work/venv/bin/python" -c "import $module" 2> /dev/null; then
        echo "FAIL: $module is importable in the [train] environment" >&2
        exit 1
    fi
done

# 3. Train, evaluate, and the one-line error of a command that needs the pipeline.
"$work/venv/bin/bltdata" train --data "$work/demo/shards" -o "$work/run" --preset debug --steps 3 --no-progress
"$work/venv/bin/bltdata" eval "$work/run" --data "$work/demo/shards" --max-batches 4
test -d "$work/run/checkpoints"
set +e
"$work/venv/bin/bltdata" patch "$work/demo/corpus" -o "$work/out" > "$work/patch.log" 2>&1
status=$?
set -e
expected="Error: bltdata patch needs the pipeline extra (apache_beam is not installed): pip install 'bltdata[pipeline]'"
if [ "$status" -ne 2 ] || [ "$(cat "$work/patch.log")" != "$expected" ]; then
    echo "FAIL: bltdata patch without the pipeline extra exited $status with:" >&2
    cat "$work/patch.log" >&2
    exit 1
fi
echo "train without pipeline: OK in $((SECONDS - start)) s (no Beam/numba/matplotlib/polars; trained, evaluated)"

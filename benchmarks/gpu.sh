#!/usr/bin/env bash
# The GPU check, in one go, on a machine with an NVIDIA GPU and jax[cuda] already installed
# (it installs nothing from the network): the platform, the test suite on the GPU backend,
# then the benchmarks whose figures only hold there. Results as JSON under $OUT (default
# runs/gpu): platform.json, tests.log + tests.xml, bench.json, bench.log.
#
#   bash benchmarks/gpu.sh                       # all of it (about 8 minutes on one H200)
#   GPU_ONLY=bench bash benchmarks/gpu.sh        # the benchmarks alone
#
# Python packages the machine lacks can come as wheels in .whl/ (installed into /tmp/site,
# nothing else touched); the real data sets as a copy of ../shared/data in .data/
# ($JAXDL_SHARED_DATA): kg/fb15k237 for the TransE epoch and the FedE round, text/ptb.zip and
# eval/wordsim353.tsv for word2vec.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"

if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu.sh: installing the carried wheels failed" >&2; exit 2; }
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -d .data ] && export JAXDL_SHARED_DATA="$PWD/.data"
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1 JAXDL_DATA="${JAXDL_DATA:-/tmp/jaxdl-data}"

"$PY" - "$OUT/platform.json" <<'EOF' || { echo "gpu.sh: jax sees no GPU here" >&2; exit 2; }
import json, sys
import jax
devices = jax.devices()
info = {"backend": jax.default_backend(), "jax": jax.__version__,
        "devices": [{"id": d.id, "kind": d.device_kind, "memory": (d.memory_stats() or {}).get("bytes_limit")}
                    for d in devices]}
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(json.dumps(info))
sys.exit(0 if info["backend"] == "gpu" else 1)
EOF

code=0
if [ "${GPU_ONLY:-}" != "bench" ]; then
    # The suite as CI runs it, with the GPU as the default device (the multi-device tests make
    # their own CPU devices in subprocesses); timing-free, so it may run wide.
    timeout 330 "$PY" -m pytest -q -x -n 8 -p no:cacheprovider --junitxml "$OUT/tests.xml" tests 2>&1 \
        | tee "$OUT/tests.log" | tail -5
    code=${PIPESTATUS[0]}
fi
if [ "${GPU_ONLY:-}" != "tests" ]; then
    # Absolute figures that hold only on the GPU: the matmul peak (float32 and bfloat16), the
    # MLP step and softmax epoch against it, word2vec on PTB, TransE and FedE on FB15k-237,
    # exact Shapley; peers (PyTorch, gensim, PyKEEN) where installed.
    timeout 300 "$PY" -m benchmarks --only core,word2vec,kge,fb15k,interpret --out "$OUT/bench" 2>&1 \
        | tee "$OUT/bench.log" | tail -40
    [ "${PIPESTATUS[0]}" -eq 0 ] || code=1
    cp "$OUT/bench/bench.json" "$OUT/bench.json" 2>/dev/null
fi
exit "$code"

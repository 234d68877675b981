#!/usr/bin/env bash
# bench/gpu.py on a lent GPU machine (Python 3.12, torch and transformers preinstalled, no network, no Ray):
# what the project needs there and the image lacks travels as wheels in .whl/ (ignored by git).
#
#   bench/gpu_device.sh --fetch-wheels      # here, once: download the wheels into .whl/ (about 28 MB)
#   bench/gpu_device.sh                     # there (carry .whl): install them, then run the benchmark
#
# Versions: the image had transformers 5.17 and huggingface_hub 1.33 (2026-11); the project needs
# transformers >= 5.20, which needs huggingface_hub >= 2.4 (and its httpx2). pydantic is not in the image.
# Tried on CPU with every package the image lacks hidden. Results and the log go to $OUT (or ./gpu-out).
# NEW_TOKENS, REPEATS, BENCH_TIMEOUT and MODEL override the defaults below.
set -o pipefail
cd "$(dirname "$0")/.."
WHEELS=(
    transformers==5.25.0 huggingface_hub==2.4.0 tokenizers==0.23.3 hf-xet==1.8.0 httpx2==2.16.2
    httpcore2==2.16.2 truststore==0.10.5 anyio==4.16.0 click==8.5.1 kernels==0.19.1 regex==2026.11.19
    pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing_extensions==4.16.0 orjson==3.13.0
)
if [ "${1:-}" = "--fetch-wheels" ]; then
    exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
fi
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; } 2>&1 | tee "$OUT/env.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site
python3 -c "import torch, transformers, pydantic; print('torch', torch.__version__, 'transformers',
transformers.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$OUT/env.txt"
timeout "${BENCH_TIMEOUT:-420}" python3 bench/gpu.py --model "${MODEL:-OpenGVLab/InternVL2_5-4B}" --tiles 7 \
    --rows 64 --new-tokens "${NEW_TOKENS:-16,128,1024}" --repeats "${REPEATS:-2}" --json "$OUT/gpu.json" 2>&1 \
    | tee "$OUT/gpu.log"
echo "bench rc=$?" | tee -a "$OUT/gpu.log"

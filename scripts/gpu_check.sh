#!/usr/bin/env bash
# The GPU check, one script (under 8 minutes on one H100/H200): NeKo's MoE layer vs Megatron's
# stock MoE layer at Mixtral-8x7B layer shapes (hidden 4096, FFN 14336, 8 experts, top-2, bf16,
# Transformer Engine modules and grouped GEMM where they import), TFLOPS of each and the time
# ratio (goal <= 1.03), then every gpu-marked test.
#
# Needs what the NeMo container provides (or a CUDA build of torch with megatron-core, and
# Transformer Engine for the TE spec); run from the checkout:
#   bash scripts/gpu_check.sh                 # figures to gpu_check/ (or $OUT when set)
#   pip install -e . && bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-gpu_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(), 'torch', torch.__version__)"
python -c "import transformer_engine" 2>/dev/null && spec=te || spec=local
echo "== MoE layer, Mixtral-8x7B shapes, $spec modules"
timeout 300 python benchmarks/router_overhead.py --device cuda --preset mixtral-8x7b --spec "$spec" \
    --repeats 20 --warmup 5 --json "$out/router_overhead.json"
echo "== gpu-marked tests"
timeout 240 python -m pytest -m "gpu or multi_gpu" -q -p no:cacheprovider tests 2>&1 | tee "$out/gpu_tests.txt"

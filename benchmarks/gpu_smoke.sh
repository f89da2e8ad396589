#!/usr/bin/env bash
# Tiers 1 and 2 on a ~124M-parameter GPT-2 and an ~86M-parameter ViT-Base, built from configs (hf-config:, random
# weights, nothing downloaded), in bfloat16 on a GPU; prints one row per model and tier.
#
#     benchmarks/gpu_smoke.sh [DEVICE [DTYPE [MAX_TOKENS]]]     (defaults: cuda bfloat16 2048)
#
# Without a CUDA device it says so and exits 0: nothing in the project requires a GPU. The table gives, per model
# and tier, the rows by status, the summed check time and the slowest check; the environment line names the device
# and dtype the report recorded. A failed row is listed under the table with its message (the exit code is pytest's).
set -euo pipefail

DEVICE="${1:-cuda}"
DTYPE="${2:-bfloat16}"
MAX_TOKENS="${3:-2048}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python}"
LAYERS="${GPU_SMOKE_LAYERS:-12}"  # fewer layers: a quick dry run of the script itself on a CPU

if [[ "$DEVICE" == cuda* ]] && ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_smoke: no CUDA device here (torch.cuda.is_available() is False); nothing to measure"
    exit 0
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$PYTHON" - "$WORK" "$LAYERS" <<'EOF'
import sys
from pathlib import Path

from transformers import GPT2Config, ViTConfig

root, layers = Path(sys.argv[1]), int(sys.argv[2])
configs = {
    # GPT-2 small's shape: 12 layers x 12 heads x 768 dims, 50257 tokens, context 1024 (124M parameters)
    "gpt2-124m": GPT2Config(n_layer=layers, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024),
    # ViT-Base/16 at 224 pixels, 1000 classes (86M parameters)
    "vit-base": ViTConfig(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=layers,
                          num_attention_heads=12, intermediate_size=3072, num_labels=1000),
}
architectures = {"gpt2-124m": "GPT2LMHeadModel", "vit-base": "ViTForImageClassification"}
for name, config in configs.items():
    config.architectures = [architectures[name]]
    config.save_pretrained(root / name)
EOF

STATUS=0
(cd "$REPO" && "$PYTHON" -m pytest suites/tier1 suites/tier2 -q -p no:cacheprovider --hypothesis-profile ci \
    --model "hf-config:$WORK/gpt2-124m" --model "hf-config:$WORK/vit-base" \
    --harness-device "$DEVICE" --harness-dtype "$DTYPE" --harness-max-tokens "$MAX_TOKENS" \
    --junitxml "$WORK/report/junit.xml" >"$WORK/pytest.log" 2>&1) || STATUS=$?
if [[ ! -f "$WORK/report/report.json" ]]; then
    tail -n 40 "$WORK/pytest.log"
    exit "$STATUS"
fi

"$PYTHON" - "$WORK/report/report.json" <<'EOF'
import json
import sys
from collections import defaultdict

report = json.load(open(sys.argv[1]))
env = report["environment"]
print(f"device {env.get('device')} ({env.get('device_name')}), dtype {env.get('dtype')}, "
      f"torch {env['packages'].get('torch')}, transformers {env['packages'].get('transformers')}")
groups = defaultdict(list)
for row in report["rows"]:
    groups[row["model"], row["tier"]].append(row)
print(f"{'model':<12} {'tier':>4} {'rows':>5} {'passed':>6} {'failed':>6} {'skipped':>7} {'other':>5} "
      f"{'check s':>8}  slowest check")
for (model, tier), rows in sorted(groups.items()):
    count = defaultdict(int)
    for row in rows:
        count[row["status"]] += 1
    slowest = max(rows, key=lambda row: row["duration_s"])
    other = len(rows) - count["passed"] - count["failed"] - count["skipped"]
    print(f"{model:<12} {tier:>4} {len(rows):>5} {count['passed']:>6} {count['failed']:>6} {count['skipped']:>7} "
          f"{other:>5} {sum(row['duration_s'] for row in rows):>8.1f}  {slowest['check']} "
          f"({slowest['duration_s']:.1f} s)")
for row in report["rows"]:
    if row["status"] in ("failed", "error"):
        print(f"  {row['status']}: {row['message'][:300]}")
EOF
exit "$STATUS"

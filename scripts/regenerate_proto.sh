#!/usr/bin/env bash
# Regenerates the committed Python stubs of the entropy protocol from its .proto file.
#
# Exact command (run from the repository root, in an environment with grpcio-tools installed,
# e.g. `pip install -e '.[dev]'`):
#
#   python -m grpc_tools.protoc -I qr_sampler/proto --python_out=qr_sampler/proto \
#       --pyi_out=qr_sampler/proto --grpc_python_out=qr_sampler/proto \
#       qr_sampler/proto/entropy_service.proto
#
# followed by one fix-up: protoc writes `import entropy_service_pb2` (a top-level import) into
# entropy_service_pb2_grpc.py; we rewrite it to a package-relative import so the stubs work as
# `qr_sampler.proto.*` without touching sys.path.
#
# The generated files carry a protobuf runtime version guard: the lower bound of `protobuf` in
# pyproject.toml must be at least the version named in entropy_service_pb2.py
# (`ValidateProtobufRuntimeVersion(...)`), and the lower bound of `grpcio` at least
# GRPC_GENERATED_VERSION in entropy_service_pb2_grpc.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
out=qr_sampler/proto
"$PYTHON" -m grpc_tools.protoc -I "$out" --python_out="$out" --pyi_out="$out" \
    --grpc_python_out="$out" "$out/entropy_service.proto"
sed -i 's/^import entropy_service_pb2 as /from qr_sampler.proto import entropy_service_pb2 as /' \
    "$out/entropy_service_pb2_grpc.py"
grep -n "ValidateProtobufRuntimeVersion" -A 6 "$out/entropy_service_pb2.py" | head -8
grep -n "^GRPC_GENERATED_VERSION" "$out/entropy_service_pb2_grpc.py"

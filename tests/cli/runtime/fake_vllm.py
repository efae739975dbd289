"""A stand-in for vLLM's API server, for fast tests of the native runtime's process handling.

Started exactly as the runtime starts vLLM (``--host H --port P`` among vLLM's flags); it
serves ``GET /health`` after ``FAKE_VLLM_DELAY_S`` seconds, and forks a child in the same
session (as vLLM's engine core does) so tests can check that ``qrs down`` leaves no orphan.
``FAKE_VLLM_MODE=crash`` exits with code 3 after printing a line; ``hang`` never gets healthy.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import time


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    host = argv[argv.index("--host") + 1]
    port = int(argv[argv.index("--port") + 1])
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")
    print(f"fake vllm: argv {argv}", flush=True)
    print(f"fake vllm: QR_GRPC_SERVER_ADDRESS={os.environ.get('QR_GRPC_SERVER_ADDRESS')} "
          f"VLLM_PORT={os.environ.get('VLLM_PORT', '<unset>')}", flush=True)
    if mode == "crash":
        print("fake vllm: RuntimeError: simulated engine failure", flush=True)
        return 3
    # A grandchild like vLLM's engine core: it must be stopped with its parent.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(float(os.environ.get("FAKE_VLLM_DELAY_S", "0.5")))
    if mode == "hang":
        time.sleep(600)
    print("fake vllm: serving /health", flush=True)
    http.server.HTTPServer((host, port), _Health).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Constants shared across torchserve-adapt (ports, paths, timeouts)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The source checkout (configs/, loadtests/, docs/results/ live here in a development install).
REPO_DIR = PACKAGE_DIR.parent
#: Where the committed results (Markdown, PNG, JSON) live.
RESULTS_DIR = REPO_DIR / "docs" / "results"
#: The committed scenarios the simulator, the benches and the evaluation share.
SCENARIOS_DIR = REPO_DIR / "configs" / "scenarios"

#: Loopback only: every server and load test of this project stays on this host.
LOOPBACK = "127.0.0.1"

DEFAULT_WORKDIR = Path("runs/server")
DEFAULT_INFERENCE_PORT = 8080
DEFAULT_MANAGEMENT_PORT = 8081
DEFAULT_METRICS_PORT = 8082
DEFAULT_GRPC_INFERENCE_PORT = 7070
DEFAULT_GRPC_MANAGEMENT_PORT = 7071
DEFAULT_JOB_QUEUE_SIZE = 100
#: `tsadapt lab demo`'s short bench: surges the registration defaults do not absorb on a 2-core
#: box (bursty and diurnal are light there: every controller meets every SLO).
DEMO_SCENARIO = "surge"

SERVER_STATE_FILE = "tsadapt-server.json"
KEY_FILE = "key_file.json"
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
MODEL_VERSION = "1.0"
#: How long a drain before a scale-down waits for the leaving workers' current batch (ms).
DRAIN_TIMEOUT_MS = 2000

#: TorchServe's worker decodes ``application/json`` bodies before the handler unless this
#: environment variable is "false" (its protocol code, ``ts/protocol/otf_message_handler.py``);
#: our handlers take either form (``docs/results/frontend-tuning.md`` measures both).
TS_DECODE_ENV = "TS_DECODE_INPUT_REQUEST"
#: Our handler's decoder of raw JSON bodies: "stdlib" (the default) or "orjson".
JSON_DECODER_ENV = "TSADAPT_JSON_DECODER"

# Written by the handlers (handlers/base.py), read by the profiler and the controller.
#: Response header carrying the size of the batch that served the request.
BATCH_SIZE_HEADER = "X-TSAdapt-Batch-Size"
#: Response header naming that batch: "<worker pid>-<batch number in that worker>".
BATCH_ID_HEADER = "X-TSAdapt-Batch-Id"
#: Response header: wall-clock time (epoch seconds) when that batch reached the handler.
BATCH_START_HEADER = "X-TSAdapt-Batch-Start"
#: Model metrics (counters) emitted once per batch.
METRIC_BATCHES = "AdaptBatches"
METRIC_BATCH_REQUESTS = "AdaptBatchRequests"
METRIC_HANDLER_MS = "AdaptHandlerMilliseconds"

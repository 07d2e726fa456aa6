"""Policy side of torchserve-adapt: workloads, the TorchServe simulator, scenarios, metrics.

Modules: ``workloads`` (arrival processes shared with the Locust shapes), ``simulator``
(discrete-event TorchServe model), ``scenario`` (YAML scenarios, ``run_static``),
``metrics`` (SLO attainment, goodput, percentiles), ``bench_sim`` / ``commands``
(``sim-bench``).
"""

"""The simulator room: workloads, the discrete-event TorchServe model, scenarios, metrics and
the simulated sidecar (:mod:`.control`, the one control step over the simulator)."""

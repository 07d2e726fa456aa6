"""A real TorchServe to work against: start/stop one with the demo models (:mod:`.server`),
archive them (:mod:`.archive`), profile a served model's batch latency (:mod:`.profiler`)."""

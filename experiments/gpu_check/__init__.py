"""The one-shot GPU check: a self-contained kit built here, run once on a GPU machine.

``tsadapt lab gpu-check --build-kit DIR`` packs everything the check needs that the GPU machine
lacks (Python packages, a Java runtime, the plugin jar, the model archives, ``run.sh``);
``bash DIR/run.sh OUT_DIR`` runs it there; ``tsadapt lab gpu-check --rehearse`` runs the same kit
on this machine's CPU with tiny budgets.
"""

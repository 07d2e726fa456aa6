"""Scale-out beyond one pod: the Kubernetes HPA algorithm, a fleet of simulated pods with
their sidecars, and ``tsadapt lab scaleout evaluate``."""

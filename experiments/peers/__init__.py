"""Other serving systems run on the same work as ``tsadapt lab bench`` (``--peers``).

``rayserve``: the demo models on Ray Serve (``rayserve_app``); ``bentoml``: the same models
on BentoML 1.4 (``bentoml_service``). Both run each replica or worker on our own handler
code and the same JSON bodies, in their own virtual environment (``envs``), and are benched
by ``peer_bench`` with the same arrivals, Locust machinery and report columns as our
controllers, in two variants each (``VARIANTS``): fixed, against ``static``, and adaptive,
against our controllers.
"""

#: Peers ``tsadapt lab bench --peers`` knows.
PEERS = ("rayserve", "bentoml")
#: The runs of each peer: (run name, mode); ``fixed`` is compared with TorchServe's
#: ``static``, the other with our adaptive controllers.
VARIANTS = {
    "rayserve": (("rayserve-fixed", "fixed"), ("rayserve-auto", "auto")),
    "bentoml": (("bentoml-nobatch", "fixed"), ("bentoml-adaptive", "adaptive")),
}

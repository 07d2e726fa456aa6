"""Other serving systems run on the same work as ``tsadapt lab bench`` (``--peers``).

``rayserve``: the demo models on Ray Serve (``rayserve_app``), benched by ``rayserve_bench``
with the same arrivals, Locust machinery and report columns as our controllers. Ray is an
optional dependency (``pip install .[peers]``), imported only when a peer runs.
"""

#: Peers ``tsadapt lab bench --peers`` knows.
PEERS = ("rayserve",)

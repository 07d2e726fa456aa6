"""TorchServe frontend plugin (``/adapt`` on the management port) and its Python client.

Installed as ``tsadapt.plugin``: :mod:`.build` compiles the Java sources in ``java/`` into a jar
for ``plugins_path``; :mod:`.adapt_client` talks to the endpoints.
"""

"""The demo models: one file per model, each defining exactly one ``nn.Module``.

TorchServe imports a model file by its stem and requires a single class defined in it,
so building blocks come from :mod:`tsadapt.handlers.layers`.
"""

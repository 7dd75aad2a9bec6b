"""archwarden: keep every pod on nodes whose architecture its images can run on.

Layers, callers above callees (data flows one way):

    cli, handlers          kopf glue and the command line
      -> policy            pure decisions: no kopf, no httpx, no I/O
      -> registry, kube    the registry client (usable alone), cluster facts
      -> platforms, reference, settings
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

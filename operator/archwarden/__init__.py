"""archwarden: keep every pod on nodes whose architecture its images can run on.

Layers, callers above callees (data flows one way; pyproject.toml's import-linter contracts
hold them, ``make lint`` checks them; docs/architecture.md walks the request path):

    __main__, cli          the command line (run, check, report, inspect, ...)
      -> handlers          kopf glue: start-up, registrations, the runtime's watches
      -> audit, gatekeeper background work over what runs and what waits
      -> admission         one review: scope, inputs, answers, decision, outcome
         pod_store, workload_store, readiness, serving, webhook_server, certs
      -> kube              cluster facts (watches, Events, reports, gates, tokens)
      -> settings          the configuration file, validated
      -> policy            pure decisions: no I/O, no framework, no client
         registry          the registry client, usable alone (no kopf, no Kubernetes client)
         metrics, printable
      -> platforms, reference, reasons
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

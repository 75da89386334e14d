"""``codecbench web``: a browsable view of experiments, RD curves, failures and workers.

A Starlette application with server-rendered Jinja2 templates (autoescaped: agent names, labels
and error text render as text). It talks to the orchestrator over gRPC through
:class:`codecbench.client.Client` with the token of the browser session's user, so it shows exactly
what that user may see; every page needs a login (:mod:`codecbench.web.sessions`). Every page
works without JavaScript; scripts add only live updates (server-sent events fed by
``WatchExperiment``) and the interactive RD chart (Plotly's bundle from the ``plotly`` Python
package, served by the app itself). No page refers to another host.

Modules:

- :mod:`codecbench.web.app`: the application (settings, client lifetime, error pages, headers);
- :mod:`codecbench.web.routes`: the pages (experiments, one experiment, compare, failures, workers);
- :mod:`codecbench.web.live`: the server-sent event streams;
- :mod:`codecbench.web.sessions`: login (one-time URL or pasted token), sessions, Origin checks;
- :mod:`codecbench.web.present`: what the templates show, computed from messages (filters, sorting).
"""

from __future__ import annotations

from codecbench.web.app import WebSettings, create_app

__all__ = ["WebSettings", "create_app"]

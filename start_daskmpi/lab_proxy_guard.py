"""A Jupyter server extension, loaded by JupyterLab mode only: JupyterLab's
proxy (jupyter-server-proxy) reaches the dashboard it fronts and nothing else.

Its ``/proxy/<port>/`` routes reach any port of the node: a page that another
user serves there would run with JupyterLab's origin, which can use its API
(kernels, files), and would get the user's cookies.  Its ``/proxy/<host>:<port>/``
routes are closed by an empty host allowlist in JupyterLab's config.
"""
from __future__ import annotations

from typing import Any

SECTION = "DashboardProxyGuard"  # JupyterLab's config: {SECTION: {"port": N}}


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "start_daskmpi.lab_proxy_guard"}]


def guarded(handler: type, allowed: int) -> type:
    """``handler``, jupyter-server-proxy's, refusing every port but ``allowed``."""
    from tornado import web

    class DashboardOnly(handler):  # type: ignore[misc, valid-type]
        def prepare(self) -> Any:
            if int(self.path_args[0]) != allowed:
                raise web.HTTPError(403, f"only the Dask dashboard (port {allowed}) is proxied")
            return super().prepare()

    return DashboardOnly


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_server.utils import url_path_join
    from jupyter_server_proxy.handlers import LocalProxyHandler
    from tornado.routing import HostMatches

    allowed = int(serverapp.config[SECTION]["port"])
    web_app = serverapp.web_app
    base = web_app.settings["base_url"]
    handler = guarded(LocalProxyHandler, allowed)
    rules = [
        (url_path_join(base, r"/proxy/(\d+)(/.*|)"), handler, {"absolute_url": False}),
        (url_path_join(base, r"/proxy/absolute/(\d+)(/.*|)"), handler, {"absolute_url": True}),
    ]
    # Before jupyter-server-proxy's own routes for the same paths, which it adds
    # first (extensions load in name order): tornado's routers only append, so
    # the new rule is moved to the front of the application's list of them.
    router = web_app.default_router
    router.add_rules([(HostMatches(".*"), rules)])
    router.rules.insert(0, router.rules.pop())

"""A Jupyter server extension, loaded by JupyterLab mode only: JupyterLab's
proxy (jupyter-server-proxy) reaches the dashboard it fronts and nothing else.

Its ``/proxy/<port>/`` routes reach any port of the node, by the name
``localhost`` (which may be another user's server on ::1): a page served
there would run with JupyterLab's origin, which can use its API (kernels,
files), and would get the user's cookies.  Here ``/proxy/<label>/`` alone
answers, and goes to the dashboard's exact endpoint: its private socket, or
its TCP host and port.  The ``/proxy/<host>:<port>/`` routes are closed by an
empty host allowlist in JupyterLab's config.
"""
from __future__ import annotations

from typing import Any

SECTION = "DashboardProxyGuard"  # JupyterLab's config: {SECTION: {"label": N, ...}}


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "start_daskmpi.driver.lab_proxy_guard"}]


def guarded(handler: type, label: int, socket: str | None, host: str, port: int) -> type:
    """``handler``, jupyter-server-proxy's, answering ``/proxy/<label>/`` alone,
    from the dashboard at ``socket`` (a Unix socket; the URL's host and port
    are then only names), else at ``host:port``."""
    from tornado import web

    target_host = "localhost" if socket else host  # the socket's name, as the proxy wants it

    class DashboardOnly(handler):  # type: ignore[misc, valid-type]
        unix_socket = socket

        def prepare(self) -> Any:
            if int(self.path_args[0]) != label:
                raise web.HTTPError(403, f"only the Dask dashboard (port {label}) is proxied")
            return super().prepare()

        def proxy(self, _: str, proxied_path: str) -> Any:
            # Past LocalProxyHandler's own, which dials the name localhost.
            return super(handler, self).proxy(target_host, port, proxied_path)

        async def open(self, _: str, proxied_path: str) -> Any:
            return await self.proxy_open(target_host, port, proxied_path)

    return DashboardOnly


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_server.utils import url_path_join
    from jupyter_server_proxy.handlers import LocalProxyHandler
    from tornado.routing import HostMatches

    config = serverapp.config[SECTION]
    label, socket = int(config["label"]), config.get("socket")
    host, port = config.get("host", "127.0.0.1"), int(config.get("port") or label)
    web_app = serverapp.web_app
    base = web_app.settings["base_url"]
    handler = guarded(LocalProxyHandler, label, socket, host, port)
    allowed = {"host_allowlist": ["localhost" if socket else host]}
    rules = [
        (url_path_join(base, r"/proxy/(\d+)(/.*|)"), handler,
         {"absolute_url": False, **allowed}),
        (url_path_join(base, r"/proxy/absolute/(\d+)(/.*|)"), handler,
         {"absolute_url": True, **allowed}),
    ]
    # Before jupyter-server-proxy's own routes for the same paths, which it adds
    # first (extensions load in name order): tornado's routers only append, so
    # the new rule is moved to the front of the application's list of them.
    router = web_app.default_router
    router.add_rules([(HostMatches(".*"), rules)])
    router.rules.insert(0, router.rules.pop())

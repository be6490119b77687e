"""Look at a running JupyterLab as its user would, from the node it runs on:
python check_lab.py BASE TOKEN DASHBOARD_PORT [--browser SHOTS] [--refused HOST:PORT]
                    [--stranger HOST:PORT]

- the dashboard through JupyterLab's proxy: its status page, and the plot list
  that dask-labextension's sidebar loads;
- JupyterLab's proxy refuses any host but this node's loopback (``--refused``:
  a host:port it must not reach, the scheduler's own address say);
- ``--stranger``: the dashboard relay's far end gives nothing to a client
  without the job's certificate, over TLS or plain TCP;
- with ``--browser``, headless Chromium opens JupyterLab, its Dask sidebar and
  the proxied dashboard, whose plots come over WebSockets; screenshots in SHOTS.

Prints one line per check, and exits non-zero on the first that fails.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def get(url: str, token: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def check(what: str, ok: bool, seen: object) -> None:
    print(f"{what}: {'ok' if ok else f'FAILED ({seen})'}", flush=True)
    if not ok:
        sys.exit(1)


def as_stranger(address: str) -> None:
    """Ask the relay at ``address`` for the dashboard with no certificate."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    for how in ("TLS without the job's certificate", "plain TCP"):
        answer = b""
        try:
            with socket.create_connection((host, int(port)), timeout=10) as raw, \
                    (context.wrap_socket(raw) if how.startswith("TLS") else raw) as sock:
                sock.sendall(b"GET /status HTTP/1.0\r\n\r\n")
                answer = sock.recv(1024)
        except (OSError, ssl.SSLError) as e:
            answer = f"refused: {type(e).__name__}".encode()
        check(f"the relay gives nothing over {how}", not answer.startswith(b"HTTP"), answer)


def browse(base: str, token: str, port: int, shots: Path) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    # Chromium's singleton socket goes in $TMPDIR, whose path must fit a Unix
    # socket's 108 bytes: the test's own folder may not.
    with sync_playwright() as p, tempfile.TemporaryDirectory(dir="/tmp", prefix="lab-") as tmp:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=BROWSER_FLAGS,
                                    env={**os.environ, "TMPDIR": tmp})
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/lab?token={token}", timeout=60_000)
            page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
            check("JupyterLab's page", "JupyterLab" in page.title(), page.title())
            # dask-labextension's sidebar knows the dashboard, through the proxy:
            page.locator("[data-id='dask-dashboard-launcher']").click()
            proxied = "[...document.querySelectorAll('input')].map(i => i.value)" \
                ".find(v => v.includes('proxy/'))"
            page.wait_for_function(f"() => {proxied}", timeout=60_000)
            url = page.evaluate(proxied)
            check("the Dask sidebar's dashboard URL", url.endswith(f"proxy/{port}"), url)
            page.get_by_text("Task Stream").first.wait_for(timeout=60_000)  # its plots
            page.screenshot(path=shots / "jupyterlab.png")
            page.goto(f"{base}/proxy/{port}/status", timeout=60_000)
            page.wait_for_selector(".bk-Figure, .bk-root, div.bk", timeout=60_000)
            page.screenshot(path=shots / "dashboard.png")
            check("the proxied dashboard's page", "Dask" in page.title(), page.title())
        finally:
            browser.close()
    for name in ("jupyterlab.png", "dashboard.png"):
        size = (shots / name).stat().st_size
        check(f"screenshot {name}", size > 10_000, f"{size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("token")
    parser.add_argument("port", type=int)
    parser.add_argument("--browser", type=Path)
    parser.add_argument("--refused")
    parser.add_argument("--stranger")
    args = parser.parse_args()
    status, body = get(f"{args.base}/proxy/{args.port}/status", args.token)
    check("the proxied dashboard", status == 200 and b"Dask" in body, status)
    status, body = get(f"{args.base}/proxy/{args.port}/individual-plots.json", args.token)
    plots = json.loads(body) if status == 200 else {}
    check("the sidebar's plot list", any("Task Stream" in name for name in plots),
          (status, list(plots)))
    if args.refused:
        status, _ = get(f"{args.base}/proxy/{args.refused}/status", args.token)
        check(f"the proxy refuses {args.refused}", status == 403, status)
    if args.stranger:
        as_stranger(args.stranger)
    if args.browser:
        browse(args.base, args.token, args.port, args.browser)


if __name__ == "__main__":
    main()

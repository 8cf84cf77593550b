"""Headless Chromium against a running web process, as a signed-in member of staff.

Chromium takes no cookie on its command line, so it talks to a small relay in the test process
that forwards each request to the web process with the staff session's cookie. The relay can also
serve a "probe" page that frames many admin pages at a given width and reports, as JSON in the
DOM, how far each one overflows: one browser start for every page.
"""

from __future__ import annotations

import contextlib
import html
import http.client
import json
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PROBE_PATH = "/__probe__"

# Runs in the probe page once every frame has loaded. A page overflows when the document is wider
# than the frame, or when an element that scrolls sideways (the changelist's `.results`, say) hides
# part of its content: both mean columns a 1280 px window does not show.
_PROBE_SCRIPT = """
function measure(frame) {
  try { return measureFrame(frame); } catch (e) { return {url: frame.getAttribute('src'), error: String(e),
    over: -1, where: '', title: '', width: 0}; }
}
function measureFrame(frame) {
  var doc = frame.contentDocument, root = doc.documentElement, worst = {over: root.scrollWidth - root.clientWidth,
    where: 'page'};
  doc.querySelectorAll('.results, table, fieldset, .module, #content').forEach(function (el) {
    var over = el.scrollWidth - el.clientWidth;
    var style = doc.defaultView.getComputedStyle(el);
    var clips = ['auto', 'scroll', 'hidden'].indexOf(style.overflowX) >= 0;
    if (clips && over > worst.over) {
      worst = {over: over, where: el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
        (el.className ? '.' + String(el.className).split(' ').join('.') : '')};
    }
  });
  return {url: frame.getAttribute('src'), over: worst.over, where: worst.where,
    title: doc.title, width: root.clientWidth};
}
window.addEventListener('load', function () {
  var out = document.createElement('pre');
  out.id = 'probe-result';
  out.textContent = JSON.stringify(Array.prototype.map.call(document.querySelectorAll('iframe'), measure));
  document.body.appendChild(out);
});
"""


def _probe_page(paths: list[str], width: int, height: int) -> bytes:
    frames = "".join(
        f'<iframe src="{path}" width="{width}" height="{height}" style="display:block;border:0"></iframe>'
        for path in paths
    )
    return (
        f"<!doctype html><html><body style='margin:0'>{frames}<script>{_PROBE_SCRIPT}</script></body></html>".encode()
    )


class _Relay(ThreadingHTTPServer):
    daemon_threads = True
    target_port: int
    cookie: str
    probe: bytes = b""


class _Handler(BaseHTTPRequestHandler):
    server: _Relay

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path == PROBE_PATH:
            self._answer(200, [("Content-Type", "text/html; charset=utf-8")], self.server.probe)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.target_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("cookie", "host", "connection")}
            headers.update({"Cookie": self.server.cookie, "Host": f"127.0.0.1:{self.server.target_port}"})
            upstream.request("GET", self.path, headers=headers)
            response = upstream.getresponse()
            body = response.read()
            # The probe page frames the admin, which forbids framing (X-Frame-Options: DENY).
            dropped = ("transfer-encoding", "connection", "x-frame-options", "content-security-policy")
            passed = [(k, v) for k, v in response.getheaders() if k.lower() not in dropped]
            self._answer(response.status, passed, body)
        finally:
            upstream.close()

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StaffBrowser:
    """Headless Chromium pointed at a relay that signs every request in as staff."""

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        self.port = int(relay.server_address[1])

    def overflow_report(self, paths: list[str], *, width: int = 1280, height: int = 900) -> list[dict[str, Any]]:
        """How many px each page overflows at `width`: [{url, over, where, title, width}]."""
        self.relay.probe = _probe_page(paths, width, height)
        dom = _chromium(
            [f"--window-size={width + 40},{height}", "--virtual-time-budget=30000", "--dump-dom",
             f"http://127.0.0.1:{self.port}{PROBE_PATH}"],
            timeout=180,
        )  # fmt: skip
        found = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
        assert found, f"the probe page reported nothing; chromium printed: {dom[-2000:]}"
        return list(json.loads(html.unescape(found.group(1))))

    def screenshot(self, path: str, target: Path, *, width: int = 1280, height: int = 900) -> Path:
        """A PNG of `path` in a `width`x`height` window."""
        _chromium(
            [f"--window-size={width},{height}", "--virtual-time-budget=5000", f"--screenshot={target}",
             f"http://127.0.0.1:{self.port}{path}"],
            timeout=120,
        )  # fmt: skip
        return target


@contextlib.contextmanager
def staff_browser(target_port: int, session_cookie: str) -> Iterator[StaffBrowser]:
    """A relay on a free port adding `Cookie: sessionid=…` to each request to `target_port`."""
    relay = _Relay(("127.0.0.1", 0), _Handler)
    relay.target_port = target_port
    relay.cookie = f"sessionid={session_cookie}"
    thread = threading.Thread(target=relay.serve_forever, name="staff-relay", daemon=True)
    thread.start()
    try:
        yield StaffBrowser(relay)
    finally:
        relay.shutdown()
        relay.server_close()


def _chromium(args: list[str], *, timeout: float) -> str:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="sentinel-chromium-") as profile:
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ]
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    return done.stdout.decode(errors="replace")

"""The viewer bench's one web server: OHIF's built ``dist/`` and Orthanc's DICOMweb on one origin.

OHIF is a single-page app: any path that is not a file (``/viewer``, ``/segmentation``...) gets index.html.
``/app-config.js`` is the bench's own configuration, not the one in dist/. ``/dicom-web/...`` is proxied to
Orthanc unchanged, so the browser needs no CORS (Orthanc sends none). Standard library only.
"""

from __future__ import annotations

import http.client
import mimetypes
import shutil
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

APP_CONFIG = Path(__file__).with_name("app-config.js")
DICOMWEB_PREFIX = "/dicom-web"
_TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".html": "text/html; charset=utf-8",
}
# Request headers that must not travel through a proxy hop (RFC 9110 section 7.6.1).
# Host is kept: Orthanc writes BulkDataURIs with it, so they point back at this server, not at Orthanc.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
_CHUNK = 1 << 16


def content_type(path: Path) -> str:
    return _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    server: BenchHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        if path == DICOMWEB_PREFIX or path.startswith(DICOMWEB_PREFIX + "/"):
            self._proxy()
        elif self.command in ("GET", "HEAD"):
            self._static(path)
        else:
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    def _static(self, path: str) -> None:
        if path == "/app-config.js":
            self._send_file(self.server.app_config)
            return
        root = self.server.dist
        candidate = (root / path.lstrip("/")).resolve()
        if candidate.is_relative_to(root) and candidate.is_file():
            self._send_file(candidate)
        elif Path(path).suffix and Path(path).suffix != ".html":
            # A missing asset is a 404, not index.html: OHIF would try to run HTML as a script.
            self.send_error(HTTPStatus.NOT_FOUND)
        else:
            self._send_file(root / "index.html", cache=False)

    def _send_file(self, file: Path, cache: bool = True) -> None:
        size = file.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type(file))
        self.send_header("Content-Length", str(size))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-cache")
        self.end_headers()
        if self.command != "HEAD":
            with file.open("rb") as handle:
                shutil.copyfileobj(handle, self.wfile, _CHUNK)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        upstream = http.client.HTTPConnection(self.server.orthanc_host, self.server.orthanc_port, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        except OSError as exc:
            self.send_error(HTTPStatus.BAD_GATEWAY, f"Orthanc: {exc}")
            return
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class BenchHTTPServer(ThreadingHTTPServer):
    """Serves ``dist`` and proxies ``/dicom-web`` to Orthanc at ``orthanc_host:orthanc_port``."""

    daemon_threads = True

    def __init__(
        self,
        dist: Path,
        orthanc_port: int,
        *,
        port: int = 0,
        orthanc_host: str = "127.0.0.1",
        app_config: Path = APP_CONFIG,
        log_requests: bool = False,
    ) -> None:
        if not (dist / "index.html").is_file():
            raise FileNotFoundError(f"no OHIF build at {dist} (run tools/viewer_bench/install.sh)")
        self.dist = dist.resolve()
        self.app_config = app_config
        self.orthanc_host = orthanc_host
        self.orthanc_port = orthanc_port
        self.log_requests = log_requests
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="viewer-bench-http", daemon=True)
        thread.start()
        return thread

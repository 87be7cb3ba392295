"""The photo app: an offline photo and notes search page served on 127.0.0.1 (`edge-gcl app`).

`server.py` holds the endpoints (`PhotoSearchApp`), the HTTP plumbing (`create_server`) and the
command; `static/` the page (HTML, CSS, JS; no inline code, no external resource). Torch-free.
"""

from __future__ import annotations

from .server import PhotoSearchApp, build_index, create_server, main

__all__ = ["PhotoSearchApp", "build_index", "create_server", "main"]

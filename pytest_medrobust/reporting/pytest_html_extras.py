"""Per-item extras for pytest-html (when it is installed): the cell's metrics and failures, and
the minimal failing mask of a search cell, in pytest-html's own report."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any


def extras_for(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        from pytest_html import extras
    except ImportError:
        return []
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{value:.4f}</td></tr>"
        for name, value in (record.get("metrics") or {}).items()
        if isinstance(value, (int, float))
    )
    failures = "".join(f"<li>{html.escape(str(f))}</li>" for f in record.get("failures") or [])
    snippet = (
        f"<div class='medrobust'><p>medrobust cell <code>{html.escape(str(record.get('id')))}</code>: "
        f"{html.escape(str(record.get('outcome')))}</p>"
        + (f"<ul>{failures}</ul>" if failures else "")
        + (f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>" if rows else "")
        + "</div>"
    )
    out = [extras.html(snippet)]
    search = record.get("search") or {}
    if search.get("picture_png_base64"):
        out.append(extras.png(search["picture_png_base64"], name=str(search.get("description", "mask"))))
    return out

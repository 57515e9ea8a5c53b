"""The root page: where the API and its description are."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["health"])

HOME_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>commcredits</title>
<style>body{font-family:system-ui,sans-serif;max-width:42rem;margin:3rem auto;line-height:1.5}
code{background:#f3f3f3;padding:0 .2rem}</style></head>
<body>
<h1>commcredits</h1>
<p>Prepaid credits and online charging for PSTN minutes.</p>
<ul>
<li>The HTTP API is under <code>/v1</code>;
 send <code>Authorization: Bearer &lt;token&gt;</code>.</li>
<li>Its description: <a href="/openapi.json">/openapi.json</a>
 (browsable at <a href="/docs">/docs</a>).</li>
<li>Health: <a href="/healthz">/healthz</a>, <a href="/readyz">/readyz</a>,
 metrics: <a href="/metrics">/metrics</a>.</li>
</ul>
</body>
</html>
"""


@router.get("/", response_class=HTMLResponse, summary="The root page", include_in_schema=False)
def home() -> HTMLResponse:
    return HTMLResponse(HOME_PAGE)

"""Following a front end's ES module imports as a browser would, over HTTP."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import aiohttp

from inventory.api.webapp import CONTENT_SECURITY_POLICY

#: A module's relative imports and re-exports (`import ... from "./x.js"`,
#: `export { a } from "../shared/x.js"`).
IMPORT_RE = re.compile(r'^(?:import|export) [^;]*? from "(\.{1,2}/[^"]+)";', re.M)


async def follow_imports(http: aiohttp.ClientSession, api_url: str, entry: str) -> dict[str, str]:
    """Every module reached from ``entry`` (a path such as ``/app/main.js``) by its
    relative imports, path -> source. Each is served as JavaScript under the policy and
    imports nothing from another origin."""
    pending, sources = [entry], {}
    while pending:
        path = pending.pop()
        if path in sources:
            continue
        async with http.get(api_url + path) as answer:
            assert answer.status == 200, path
            assert answer.content_type == "text/javascript", path
            assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
            source = await answer.text()
        assert not re.search(r"""from ["']https?:""", source), path
        sources[path] = source
        pending.extend(urljoin(path, target) for target in IMPORT_RE.findall(source))
    return sources

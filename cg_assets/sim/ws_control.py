"""Out-of-process control of the WebSocket simulator, served by the REST simulator's
`/_sim/ws/*` routes (the WebSocket port speaks only WebSocket).

A soak or a demo in another process triggers the faults a long-running consumer meets:
`POST /_sim/ws/close` closes every connection from the server side, `GET|POST /_sim/ws/faults`
shows or sets `answer_pings` (false: a ping silence), `malformed_rate` and `stall`,
`POST /_sim/ws/poison` (`{"kind": "microseconds" | "negative_price"}`) pushes one broken
copy of the newest event, and `GET /_sim/ws/stats` gives the server's counters.
"""

from __future__ import annotations

import json

from cg_assets.sim.http import Response, faults_endpoint, json_response
from cg_assets.sim.ws import WsSimulator

PREFIX = "/_sim/ws/"


def ws_admin(ws: WsSimulator, method: str, path: str, body: bytes) -> Response:
    """Answer one `/_sim/ws/*` request for `ws`."""
    route = (method, path.removeprefix(PREFIX))
    if route == ("POST", "close"):
        return json_response(200, {"closed": ws.faults.close_connections()})
    if route[1] == "faults" and method in ("GET", "POST"):
        return faults_endpoint(ws.faults, method, body)
    if route == ("POST", "poison"):
        try:
            request = json.loads(body or b"{}")
            kind = request.get("kind") if isinstance(request, dict) else None
            return json_response(200, {"frames": ws.faults.send_poison(str(kind))})
        except ValueError as exc:
            return json_response(400, {"error": str(exc)})
    if route == ("GET", "stats"):
        return json_response(200, ws.stats.as_dict())
    return json_response(404, {"error": "Not Found"})

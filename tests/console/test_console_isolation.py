"""Environment isolation in every console view: with data in the
development environment (events, a failed event, a company with usage and
a limit firing, a user, a webhook endpoint with a delivery), a session of the
staging environment sees none of it on any page or data endpoint, and its
detail pages answer 404 for development's objects."""

from __future__ import annotations

import re

from starlette.routing import Mount, Route

from tests.api.conftest import Api
from tests.console.conftest import csrf_of, make_hook, metered_company, sign_in
from tests.support.receiver import Receiver


def get_routes(api: Api) -> list[str]:
    mount = next(r for r in api.app.routes if isinstance(r, Mount) and r.path == "/console")
    return [
        "/console" + r.path
        for r in mount.routes
        if isinstance(r, Route) and "GET" in (r.methods or ()) and r.path != "/sign-in"
    ]


def test_every_view_keeps_to_its_environment(console: Api) -> None:
    company_id = metered_company(console)
    console.post("/batch", {"events": [{"type": "track", "event": "x"}]}, key=console.read_only)
    secret_track = {"event": "secret-subtype", "company": {"id": "acme"}}
    assert console.post("/events", {"event_type": "track", "body": secret_track}).status_code == 201
    with Receiver() as receiver:
        hook = make_hook(console, receiver.url)
        console.client.post(
            f"/console/webhooks/{hook.id}/test",  # type: ignore[attr-defined]
            data={"csrf_token": csrf_of(console.client)},
        )
    own = console.client.get("/console/events").text
    event_id = re.search(r'data-id="(evt_[0-9a-f]+)"', own).group(1)  # type: ignore[union-attr]
    user_id = re.search(
        r'href="/console/users/(user_[0-9a-f]+)"',
        console.client.get("/console/users").text,
    ).group(1)  # type: ignore[union-attr]
    delivery_id = re.search(
        r'href="/console/webhooks/deliveries/(whev_[0-9a-f]+)"',
        console.client.get("/console/webhooks").text,
    ).group(1)  # type: ignore[union-attr]
    secrets = [event_id, company_id, user_id, delivery_id, "Acme Corp", "secret-subtype", "limits"]
    params = {
        "event_id": event_id,
        "company_id": company_id,
        "user_id": user_id,
        "delivery_id": delivery_id,
    }

    other = console.client.__class__(console.app)
    assert sign_in(other, console.other_env).status_code == 303
    checked = 0
    for template in get_routes(console):
        path = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], template)
        mine = console.client.get(path)
        assert mine.status_code == 200, path  # the development session sees it
        theirs = other.get(path)
        if "{" in template:
            assert theirs.status_code == 404, path
        else:
            assert theirs.status_code == 200, path
            for secret in secrets:
                assert secret not in theirs.text, (path, secret)
        checked += 1
    assert checked >= 14

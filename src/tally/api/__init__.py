"""The HTTP API, the only layer that knows about status codes: the app and
its route table (``app``), one package per resource (``events``,
``companies``, ``catalog``, ``webhooks``) and what they share (``common``).

Every resource is laid out alike:

- ``requests``: the request bodies (msgspec structs and their decoders) and
  the reading of bodies and query parameters into storage's records;
- ``shapes``: the response structs and the functions that build them;
- ``openapi``: the OpenAPI operation of each route, the structs its schemas
  come from (``SCHEMAS``) and what the server accepts of them (``RULES``);
- ``routes``: the handlers and the route table, one ``ApiRoute`` (method,
  path, handler, operation) per route.

To add a route: its body struct and reading in ``requests``, its answer in
``shapes``, its operation in ``openapi``, its handler and ``ApiRoute`` in
``routes`` (a new resource's table goes into ``app.api_routes``), then a test
in ``tests/api``. The OpenAPI document is built from the route table, and
``tests/api/test_openapi_routes.py`` fails for a route of the app that is
not in it.
"""

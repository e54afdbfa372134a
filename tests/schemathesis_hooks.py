"""schemathesis hooks for scripts/schemathesis.sh (SCHEMATHESIS_HOOKS).

docs/openapi.json describes an NDJSON batch by its data, an array of
usages (the `UsageBatch` schema); schemathesis has no serializer for
`application/x-ndjson`, so this one writes the generated array one JSON
value a line. Anything that is not an array (schemathesis' negative
data) becomes one line, which the server refuses as it should.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return {"data": value}
    values = value if isinstance(value, list) else [value]
    lines = "".join(json.dumps(v) + "\n" for v in values)
    return {"data": lines.encode()}

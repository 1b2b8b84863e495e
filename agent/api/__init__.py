"""The API service (`imaging-agent serve`): sign-in, approvals and jobs over HTTP, OpenAPI at /docs.

`app.py` builds the FastAPI application, `auth.py` turns a bearer token into a `Principal`,
`jobs.py` runs jobs in background threads, `models.py` holds the request and response bodies,
`server.py` runs it under uvicorn, `oidc_routes.py` signs browsers in with the hospital's OpenID
provider and serves the Gradio app behind that sign-in.
"""

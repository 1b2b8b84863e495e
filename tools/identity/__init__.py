"""Who is acting: principals, local accounts and access tokens (plain Python, no web framework).

The approval gate records the authenticated principal of every decision, never a name someone
typed (docs/architecture.md, approval). `principal.py` is the model, `accounts.py` the local
accounts with argon2 hashes and lockout, `tokens.py` the signed access tokens of the API service,
`os_account.py` the reviewer at a terminal without a service.
"""

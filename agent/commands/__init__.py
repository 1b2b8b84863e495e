"""The `imaging-agent` subcommands, one module per area; agent/cli.py assembles them."""

"""The REST transport: Quart blueprints that parse, call a service, and render."""

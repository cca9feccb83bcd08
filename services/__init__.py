"""The module's domain: Lambda invocations, their log, and who may call what."""

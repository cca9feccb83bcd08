"""PyDAL table definitions and the database connection."""

from models.database import connect, create_schema, describe_url

__all__ = ["connect", "create_schema", "describe_url"]

"""PostgreSQL storage: schema, migrations, the embedded server, tenant-scoped transactions."""

from adconnect.db.database import Database, describe_url, open_database
from adconnect.db.schema import SCHEMA, TENANT_TABLES, metadata

__all__ = ["SCHEMA", "TENANT_TABLES", "Database", "describe_url", "metadata", "open_database"]

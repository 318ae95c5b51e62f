"""Alembic environment: the URL comes from Settings (DATABASE_URL) unless the caller set one."""

from __future__ import annotations

from alembic import context

from workorders import models  # noqa: F401  (registers the tables)
from workorders.db import Base, make_engine
from workorders.settings import get_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url

if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()

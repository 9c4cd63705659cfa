"""Alembic migrations of the controller's schema, run by `controller.store.migrate`."""

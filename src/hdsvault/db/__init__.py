"""Storage: the database layer (SQLAlchemy Core). SQLite by default, PostgreSQL in production.

This package knows tables and transactions, never FHIR, HTTP or keys in clear.
"""

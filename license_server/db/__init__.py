"""Storage: one serialised writer and read-only readers over SQLite, migrations, and queries.

All SQL of the project lives in this package. Query modules are grouped per aggregate
(products, licenses, ...) as small free functions taking a connection; SQLite-only details sit
in `dialect.py`, so a PostgreSQL backend means a second dialect, not edits elsewhere.
"""

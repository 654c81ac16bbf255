"""The ground every layer may import: settings, the error hierarchy, the retry policy, the database
connection (DSN handling and the embedded Postgres), and URL redaction. Imports nothing of ours but
``records``."""

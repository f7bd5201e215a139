"""The campaign store: what a merchant did with the lists, kept across runs and machines.

Opt-outs, contact history and campaigns (their frozen assignment, launch and report),
in SQLite beside the artifacts by default or in PostgreSQL (`AUDIENCE_DATABASE_URL`),
behind one `Store` (store.py), with the engines in engine.py and the schema's versioned
migrations in migrations.py.
"""

"""audience: who to contact about a product, learned from an e-commerce interaction log.

The package is a pipeline of small stages (see ../README.md): ingest -> analyze ->
features/scoring -> audiences -> artifact -> serve. Importing it pulls in no web
framework; the service and UI live behind their own imports.
"""

__version__ = "0.1.0"

"""Data: any interaction log in, one canonical event table out.

Takes CSV / Parquet files (any column names, any common time format) and gives the
canonical table of `schema` (user_id, product_id, event_type, event_time) with every
rejected row kept with its file, row and reason (`ingest`). Also makes the calibrated
sample logs (`generate`, checked against `reference`) and the statistics that describe
a log (`stats`). Reads and writes files; imports no other stage.
"""

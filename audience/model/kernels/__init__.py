"""Compiled (numba) passes of the model over CSR tables, on both cores.

Takes arrays of codes sorted by product or user and gives sums and rankings: `pairs`
(product-user and user-category sums), `related` (each product's most similar
products), `topn` (each product's top users), `blocks` (a block of products over a
block of users, for the Spark engine). `csr` holds the tables and the threads.
Nothing here knows a column name or a file.
"""

"""The Spark engine of `audience train` (`--engine spark`): the same model, computed
by PySpark DataFrames on a Spark cluster, for logs past one machine.

Each module computes one stage of the Polars engine's train from a canonical event
table on Spark, reading the model's definition (event weights, features, scorers'
constants) from the Polars engine's modules, so that the two cannot drift; tests check
that both give the same numbers.

    session    the Spark session: master, conf, bound to 127.0.0.1 in local mode
    features   per-user engagement features (`audience.model.features`)
"""

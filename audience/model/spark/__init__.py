"""The Spark engine of `audience train` (`--engine spark`): the same model, computed
by PySpark DataFrames on a Spark cluster, for logs past one machine.

Each module computes one stage of the Polars engine's train from a canonical event
table on Spark, reading the model's definition (event weights, features, scorers'
constants) from the Polars engine's modules, so that the two cannot drift; tests check
that both give the same numbers.

    session    the Spark session: master, conf, bound to 127.0.0.1 in local mode
    codes      users, products, event types and categories numbered (`codes`)
    features   per-user engagement features (`features`)
    scoring    the seed and fitted scorers (`scoring`, `fitted`)
    affinity   the affinity terms as the artifact's segment tables (`audiences.affinity`)
    audiences  every product's n best users, the products taking their category's
               head, and the heads (`audiences.build`'s ranking)
    hybrid     the collaborative term: `--cf auto`'s criteria, MLlib's implicit ALS,
               the term's weight chosen on the validation slice (`hybrid`)
    dense      with the term, every product ranked over every user, by blocks of
               products and users (`kernels.blocks`, the segments' sums)
    reasons    each shown row's two reasons, written on the executors by the Polars
               engine's own text functions (`audiences.explained`)
    train      the stages chained and the artifact's tables written (`train`)
    parity     two artifacts compared table by table (what the engines must share)

docs/spark.md says how to run it and how it compares.
"""

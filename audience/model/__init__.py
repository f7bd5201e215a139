"""Model: canonical events in, user scores and every product's audience out.

`codes` numbers the log's users and products; `features` and `scoring` / `fitted` turn
each user's history into an engagement score; `audiences` ranks each product's
candidates by engagement plus product and category affinity, with reasons; `hybrid`
adds a collaborative (ALS, `cf`) term where the log supports it, its weight judged by
`quality`'s ranking metrics; `segments` ranks any depth alike; `train` chains them and
publishes the tables as an artifact. The per-product passes are
compiled (numba) in `kernels/`. Imports `data` only.
"""

"""Model: canonical events in, user scores and every product's audience out.

`codes` numbers the log's users and products; `features` and `scoring` / `fitted` turn
each user's history into an engagement score; `audiences` ranks each product's
candidates by engagement plus product and category affinity, with reasons; `train`
chains them and publishes the tables as an artifact. The per-product passes are
compiled (numba) in `kernels/`. Imports `data` only.
"""

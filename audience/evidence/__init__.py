"""Evidence: what a log can support and how well each model does, measured honestly.

`analyze` gives a log's churn, retention and split overlap and, with a real ALS
baseline (`audience.model.cf`, which train's collaborative term shares) against random
and popularity (`baselines`), a verdict on whether collaborative filtering can work.
`evaluate` backtests every model on a time split with lift over random and confidence
intervals (`metrics`, over `audience.model.quality`'s ranking metrics); `charts` draws
them. Takes canonical events; imports `data` and `model`.
"""

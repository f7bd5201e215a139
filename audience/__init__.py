"""audience: who to contact about a product, learned from an e-commerce interaction log.

One subpackage per stage of the data flow, each importing only the stages before it
and the shared modules at the top (tests/test_layers.py checks both):

    data/         any log in: the canonical table, rejects, sample logs, statistics
    model/        canonical events -> user scores and every product's audience
    evidence/     what a log supports (analysis, CF baseline) and the time-split backtest
    experiments/  A/B statistics, campaign plans, and campaigns judged from a log
    store/        opt-outs, contact history and campaigns (SQLite or PostgreSQL)
    serving/      a verified artifact in memory, segments and campaigns from it, the
                  HTTP API and the merchant UI

    errors, settings, atomic, artifact   shared by every stage; `artifact` is the
                                         contract between model (writes) and serving (reads)

Importing `audience` or any module outside `serving/api` and `serving/ui` pulls in no
web framework.
"""

__version__ = "0.1.0"

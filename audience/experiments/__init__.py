"""Experiments: the campaign that proves a targeting's lift for real.

`abtest` sizes, checks (SRM) and judges an A/B test on conversion rates (statsmodels);
`campaign` splits a ranked audience into treatment and a hashed holdout and prices it;
`judge` counts each arm's conversions in a log after launch and reports the test, lift
and ROI; `simulate` writes a post-launch log with a known lift (the proof of `judge`).
Takes numbers, user lists and event tables; imports only the data stage.
"""

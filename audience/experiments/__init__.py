"""Experiments: the campaign that proves a targeting's lift for real.

`abtest` sizes, checks (SRM) and judges an A/B test on conversion rates (statsmodels);
`campaign` splits a ranked audience into treatment and a hashed holdout and prices it.
Takes numbers and user lists; imports no other stage.
"""

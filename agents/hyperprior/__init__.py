"""Mean-scale hyperprior learned image codec agent (Ballé et al. 2018, Minnen et al. 2018); see README.md.

The codecbench entry module is ``codec`` (class ``Codec``); ``data``, ``train`` and ``export`` make its weights.
"""

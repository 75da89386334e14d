"""Factorized-prior learned image codec agent (Ballé et al., ICLR 2017 / ICLR 2018); see README.md.

The codecbench entry module is ``codec`` (class ``Codec``); ``train`` reproduces the shipped weights.
"""

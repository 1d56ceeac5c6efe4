"""Recipes: experiments built from slimasr's parts, each a package split by job.

- :mod:`slimasr.recipes.reproduce`  the paper's Tables 1-3 and Figure 2 (``slimasr reproduce``)
"""

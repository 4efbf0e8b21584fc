"""Imported once by the fork server that starts decoding workers beside a GPU.

Forking the process that holds a CUDA context costs about a second per worker (measured on an H100 machine: 15
workers took 19 s to deliver a first file), so beside a GPU the workers are forked from a small, clean server
process instead. Importing this module there does the imports and numba compilation once, and every worker forked
from it starts warm.
"""
from thqa.features.pipeline import warm_up

warm_up()

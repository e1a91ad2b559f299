"""Ahead-of-time compilation for hardware this host does not have.

targets   the named TPU slices and GPU hosts, their compile-only devices and
          published peak figures
programs  the programs the commands run (train step, evaluator and derain
          forwards), lowered for a target's devices through the commands' own
          functions
analysis  what a compiled program says: memory, cost, collectives, kernels,
          a roofline estimate
report    the table, its Markdown and JSON
"""

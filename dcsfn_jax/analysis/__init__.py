"""Reports about the network rather than its results.

  card       the model card: parameters per module, FLOPs and MACs from XLA's
             cost analysis, the training step's activation memory
"""

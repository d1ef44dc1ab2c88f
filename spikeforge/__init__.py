"""spikeforge: code-generating, batched simulator and trainer for spiking neural networks."""

__version__ = "0.1.0"

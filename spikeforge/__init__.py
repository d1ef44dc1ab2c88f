"""spikeforge: code-generating, batched simulator and trainer for spiking neural networks."""

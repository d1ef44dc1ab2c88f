"""Exchange with other tools: NIR graphs, imported and exported (:mod:`spikeforge.interop.nir`)."""

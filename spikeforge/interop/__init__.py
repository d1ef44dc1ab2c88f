"""Exchange with other tools: NIR graphs (:mod:`spikeforge.interop.nir`)."""

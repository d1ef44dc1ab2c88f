"""NIR (the Neuromorphic Intermediate Representation) in and out of spikeforge.

``from_nir(graph_or_path, dt=...)`` builds a :class:`~spikeforge.network.Network` from a NIR
graph (docs/interop.md, "Import"); ``to_nir(network_or_trainer)`` turns a network, a built
simulation or a trainer (with its trained weights) into a ``nir.NIRGraph``, and
``write_nir`` writes one to a ``.nir`` file (docs/interop.md, "Export").
"""

from .nir_export import NirExportError, to_nir, write_nir
from .nir_import import NirImport, from_nir

__all__ = ["from_nir", "NirImport", "to_nir", "write_nir", "NirExportError"]

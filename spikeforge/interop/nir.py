"""NIR (the Neuromorphic Intermediate Representation) in and out of spikeforge.

``from_nir(graph_or_path, dt=...)`` builds a :class:`~spikeforge.network.Network` from a NIR
graph (docs/interop.md, "Import").
"""

from .nir_import import NirImport, from_nir

# to_nir (docs/interop.md, "Export") is imported here from .nir_export.

__all__ = ["from_nir", "NirImport"]

"""Exchange with other tools: NIR (the Neuromorphic Intermediate Representation) export and import."""

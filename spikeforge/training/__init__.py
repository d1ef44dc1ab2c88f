"""Training spiking networks with e-prop."""

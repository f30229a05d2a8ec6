"""The pure core: genome, catalogue, wiring, fingerprints. No I/O beyond bytes handed in."""

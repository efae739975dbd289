"""The ``qrs`` command: profiles, probing, launching and checking a qr-sampler deployment."""

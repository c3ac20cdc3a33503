"""Stage 4: backends that run a network on encoded input and return a Recording, each behind the
``Backend`` protocol and named in ``BACKENDS`` (run/backends.py).

``float`` runs a NIR layer chain in torch; ``lava-sim`` runs a Deployment on Lava's CPU simulator;
``loihi2`` runs the same Lava process graph on Loihi 2 chips (Intel's lava-loihi). Lava is imported
only in ``run.lava_sim`` and ``run.loihi2`` (lazily), so the rest of the package starts fast.
"""

"""Stage 4: backends that run a network on encoded input and return a Recording.

``float`` runs a NIR layer chain in torch; ``lava-sim`` runs a Deployment on Lava's CPU simulator.
Lava is imported only in ``run.lava_sim`` (lazily), so the rest of the package starts fast.
"""

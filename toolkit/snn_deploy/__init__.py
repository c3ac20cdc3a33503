"""snn-deploy: spiking networks from Norse/PyTorch through NIR to Loihi 2 fixed point and Lava.

The package is organised by pipeline stage (see docs/architecture.md): ``data`` and ``coding``
feed ``train``; ``convert`` turns models into NIR graphs; ``quantize`` turns NIR graphs into
Deployments for a hardware ``profiles.Profile``; ``run`` executes NIR graphs and Deployments on a
backend; ``evaluate`` turns recordings into reports. Lava is imported only inside ``run``.
"""

__version__ = "0.1.0"

"""``SpikeRecorder``: records a port's output into a memory-mapped .npy file, one row per step.

Why not Lava's ``RingBuffer`` sink: Lava 0.10 returns a Var to the host one element per message
(``AbstractPyProcessModel._get_var``, marked FIXME there), which took 28 s for the 1.5 M spike
slots of the digits test split, longer than the simulation itself. The recorder's process model
writes straight into a file the host created, so reading it back is a plain file read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


def create_record_file(path: Path, *, steps: int, width: int) -> None:
    """Create the (steps, width) uint8 .npy file a SpikeRecorder writes into."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(steps, width)).flush()


class SpikeRecorder(AbstractProcess):
    """Writes the vector it receives at time step t (counted from 1) into row t - 1 of ``path``."""

    def __init__(self, *, shape: tuple[int, ...], path: str) -> None:
        super().__init__(shape=shape, path=str(path))
        self.a_in = InPort(shape=shape)


@implements(proc=SpikeRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PySpikeRecorderModel(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._path = proc_params["path"]
        self._rows: np.ndarray | None = None

    def run_spk(self) -> None:
        data = self.a_in.recv()
        rows = self._rows
        if rows is None:  # opened here, in the worker process, not where the model was built
            rows = self._rows = np.load(self._path, mmap_mode="r+")
        rows[self.time_step - 1] = data != 0

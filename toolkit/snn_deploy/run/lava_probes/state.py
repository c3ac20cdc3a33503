"""``StateRecorder``: records a LIF's u and v after every time step into memory-mapped .npy files.

Like ``SpikeRecorder`` (recorder.py), it writes into files the host created instead of returning
Lava Vars element by element. It reads the LIF's ``u`` and ``v`` Vars through RefPorts in the
management phase after each step's spiking phase (as Lava's own ``Monitor`` does), so row t - 1
holds the state after time step t (counted from 1): v after the step's reset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyRefPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import RefPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol


def create_state_file(path: Path, *, steps: int, width: int) -> None:
    """Create the (steps, width) int32 .npy file a StateRecorder writes one state Var into."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.int32, shape=(steps, width)).flush()


class StateRecorder(AbstractProcess):
    """Reads the Vars connected to ``u_ref`` and ``v_ref`` after every step into ``u_path`` and
    ``v_path`` (int32, one row per step)."""

    def __init__(self, *, shape: tuple[int, ...], u_path: str, v_path: str) -> None:
        super().__init__(shape=shape, u_path=str(u_path), v_path=str(v_path))
        self.u_ref = RefPort(shape=shape)
        self.v_ref = RefPort(shape=shape)


@implements(proc=StateRecorder, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "floating_pt")
class PyStateRecorderModel(PyLoihiProcessModel):
    u_ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32)
    v_ref: PyRefPort = LavaPyType(PyRefPort.VEC_DENSE, np.int32)

    def __init__(self, proc_params) -> None:
        super().__init__(proc_params)
        self._paths = (proc_params["u_path"], proc_params["v_path"])
        self._rows: tuple[np.ndarray, np.ndarray] | None = None

    def post_guard(self) -> bool:
        return True

    def run_post_mgmt(self) -> None:
        rows = self._rows
        if rows is None:  # opened here, in the worker process
            rows = self._rows = (np.load(self._paths[0], mmap_mode="r+"),
                                 np.load(self._paths[1], mmap_mode="r+"))
        rows[0][self.time_step - 1] = self.u_ref.read()
        rows[1][self.time_step - 1] = self.v_ref.read()

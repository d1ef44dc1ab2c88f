"""A small e-prop training job, run by tests/test_mpi.py under mpiexec (or alone).

    python tests/mpi_job.py OUT_DIR BACKEND EPOCHS [CHECKPOINT] [n=SAMPLES]
Writes OUT_DIR/weights_rank<R>.npz for every rank.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spikeforge.training.trainer import Trainer  # noqa: E402
from tests.test_trainer import _config, _toy  # noqa: E402


def main():
    out, backend, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    extra = sys.argv[4:]
    samples = int(next((a[2:] for a in extra if a.startswith("n=")), 32))
    checkpoint = next((a for a in extra if not a.startswith("n=")), None)
    data = _toy(n=samples)
    trainer = Trainer(_config(precision="double", name=f"mpi_{backend.replace('-', '_')}"), batch_size=8, lr=0.01,
                      seed=7, backend=backend, threads=1)
    trainer.fit(data, epochs=epochs, progress=False, checkpoint=checkpoint, resume=checkpoint is not None)
    np.savez(out / f"weights_rank{trainer.comm.rank}.npz", ranks=trainer.comm.size,
             accuracy=trainer.history[-1]["train_accuracy"], **trainer.weights)


if __name__ == "__main__":
    main()

"""t2sql: fine-tune, compress, evaluate and serve small text-to-SQL models on CPUs."""

__version__ = "0.1.0"

import os as _os

# Idle OpenMP threads that spin make PyTorch several times slower on a CPU shared with other work
# (a web server, a second training run); blocking threads cost little on an idle machine.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

"""Multi-host start-up: one call before any other JAX use.

- Explicit: --coordinator_address=HOST:PORT --num_processes=N --process_id=I (any cluster,
  or several processes on one machine; CPU collectives then go through gloo).
- TPU pods and SLURM: JAX finds the coordinator itself; pass --distributed=auto
  (launch/tpu_pod.sh and launch/slurm.sbatch do).
- Otherwise: a single process, nothing to do.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)


def _in_cluster() -> bool:
    return "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize(mode: str = "auto", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> None:
    """mode: 'off' (single process), 'auto' (explicit flags if given, else SLURM/TPU
    detection by JAX when a multi-task SLURM job or TPU pod is seen), 'on' (always call
    jax.distributed.initialize and let JAX detect)."""
    explicit = coordinator_address is not None
    if mode == "off" and not explicit:
        return
    if explicit:
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator_address needs --num_processes and --process_id")
        if num_processes > 1:
            # CPU collectives across processes need gloo; harmless on GPU/TPU.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    elif mode == "on" or _in_cluster() or os.environ.get("TPU_WORKER_HOSTNAMES"):
        jax.distributed.initialize()
    else:
        return
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(),
             jax.device_count())


def is_main_process() -> bool:
    return jax.process_index() == 0

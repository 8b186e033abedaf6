"""Headless batch runs: parameter sweeps over one workflow, resumable, with a manifest; locally, on a Ray
cluster or against a running server. See :mod:`graph_runtime.batch.cli` for the command."""

from .manifest import MANIFEST_NAME, read_manifest
from .runner import BatchAborted, BatchInvalid, BatchRunner, BatchSummary, FreshOutputs, LocalBackend, Outcome
from .sweep import Job, SweepError, apply_params, expand_jobs, job_id, parse_sweep, read_params_file

__all__ = [
    "MANIFEST_NAME", "BatchAborted", "BatchInvalid", "BatchRunner", "BatchSummary", "FreshOutputs", "Job",
    "LocalBackend", "Outcome", "SweepError", "apply_params", "expand_jobs", "job_id", "parse_sweep",
    "read_manifest", "read_params_file",
]

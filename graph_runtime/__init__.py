"""graph_runtime: the engine. Workflow format, nodes and registry, validation, executor, cache, events, CLI.

It imports no torch and no diffusion code: node packs (the built-in ``nodes`` package among them) plug in
through the registry.
"""

from .context import ExecutionContext, Interrupted, NodeError, Services
from .executor import Executor, RunResult
from .node import Hidden, Link, Node, NodeInputs, NodeResult, Output, Widget
from .paths import RuntimePaths, UnsafePathError, active_paths, resolve_inside, using_paths
from .registry import NodeRegistry, default_registry
from .validation import ValidationResult, WorkflowValidationError, validate
from .workflow import WorkflowFormatError, load_workflow_document

__all__ = [
    "ExecutionContext", "Executor", "Hidden", "Interrupted", "Link", "Node", "NodeError", "NodeInputs",
    "NodeRegistry", "NodeResult", "Output", "RunResult", "RuntimePaths", "Services",
    "UnsafePathError", "ValidationResult", "Widget", "WorkflowFormatError",
    "WorkflowValidationError", "default_registry", "load_workflow_document",
    "resolve_inside", "validate", "active_paths", "using_paths",
]

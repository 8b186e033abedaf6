"""Sweeps: turn ``--sweep`` axes and parameter files into jobs, ordered for cache hits.

A job is a set of assignments ``{"NODE.INPUT": value}`` applied to one base workflow. Its id is a stable
hash of those assignments, so the same parameters name the same job (and the same output folder) in every
run of the batch, which is what resuming relies on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from .. import arguments
from ..arguments import TEXT_TYPES, UsageError, parse_value
from ..registry import NodeRegistry
from ..workflow import link_parts

_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*(?::\s*(\d+))?\s*$")
MAX_JOBS = 1_000_000


class SweepError(UsageError):
    """Bad sweep or parameter file: the message names the argument, line or field."""


@dataclass(frozen=True)
class Job:
    id: str
    params: dict[str, Any] = field(hash=False, compare=False)


def job_id(params: dict[str, Any]) -> str:
    """A stable id for a set of assignments (independent of their order)."""
    text = json.dumps(sorted(params.items()), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_job(params: dict[str, Any]) -> Job:
    return Job(id=job_id(params), params=dict(params))


def check_target(document: dict, registry: NodeRegistry | None, key: str, where: str) -> str | None:
    """Refuse a key naming a node or input the workflow does not have; returns the input's type if known."""
    try:
        return arguments.check_target(document, registry, key, where)
    except UsageError as exc:
        raise SweepError(str(exc)) from None


def _expand_token(token: str, io_type: str | None, where: str) -> list[Any]:
    m = _RANGE.match(token) if io_type not in TEXT_TYPES else None
    if m:
        start, stop, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if step < 1:
            raise SweepError(f"{where}: range step must be at least 1")
        count = abs(stop - start) // step + 1
        if count > MAX_JOBS:
            raise SweepError(f"{where}: range {token!r} has {count} values (at most {MAX_JOBS})")
        return list(range(start, stop + 1, step)) if stop >= start else list(range(start, stop - 1, -step))
    return [parse_value(token, io_type)]


def parse_sweep(text: str, document: dict, registry: NodeRegistry | None,
                base_dir: Path | None = None) -> tuple[str, list[Any]]:
    """``NODE.INPUT=V1,V2,...`` | ``NODE.INPUT=A..B[:STEP]`` | ``NODE.INPUT=@file`` | ``NODE.INPUT=[json list]``."""
    where = f"--sweep {text!r}"
    key, sep, raw = text.partition("=")
    if not sep:
        raise SweepError(f"{where}: expected NODE_ID.INPUT=VALUES, e.g. 3.seed=1..100")
    key = key.strip()
    io_type = check_target(document, registry, key, where)
    values: list[Any]
    if raw.startswith("@"):
        path = Path(raw[1:])
        if base_dir is not None and not path.is_absolute() and not path.exists():
            path = base_dir / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SweepError(f"{where}: cannot read {raw[1:]!r}: {exc}") from None
        values = [parse_value(line, io_type) for line in lines if line.strip()]
    elif raw.lstrip().startswith("["):
        try:
            values = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SweepError(f"{where}: not a JSON list: {exc}") from None
    else:
        values = []
        for token in raw.split(","):
            if token.strip() == "":
                raise SweepError(f"{where}: empty value in the list")
            values.extend(_expand_token(token.strip() if io_type not in TEXT_TYPES else token, io_type, where))
    if not values:
        raise SweepError(f"{where}: no values")
    return key, values


def read_params_file(path: str | Path, document: dict, registry: NodeRegistry | None) -> list[dict[str, Any]]:
    """One job per line: JSONL objects (``{"3.seed": 5}`` or ``{"3": {"seed": 5}}``) or CSV with a header."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"--from-file {str(path)!r}: cannot read: {exc}") from None
    is_csv = path.suffix.lower() == ".csv" or (path.suffix.lower() not in (".jsonl", ".json", ".ndjson")
                                               and not text.lstrip().startswith("{"))
    rows = _read_csv(text, path, document, registry) if is_csv else _read_jsonl(text, path, document, registry)
    if not rows:
        raise SweepError(f"--from-file {str(path)!r}: no jobs in the file")
    return rows


def _read_jsonl(text: str, path: Path, document: dict, registry) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SweepError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise SweepError(f"{where}: expected a JSON object of NODE.INPUT values, got {type(obj).__name__}")
        params: dict[str, Any] = {}
        for key, value in obj.items():
            if "." not in key and isinstance(value, dict):  # {"3": {"seed": 5}}
                for name, v in value.items():
                    params[f"{key}.{name}"] = v
            else:
                params[key] = value
        for key in params:
            check_target(document, registry, key, f"{where} field {key!r}")
        rows.append(params)
    return rows


def _read_csv(text: str, path: Path, document: dict, registry) -> list[dict[str, Any]]:
    try:
        reader = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise SweepError(f"{path.name}: not valid CSV: {exc}") from None
    if not reader:
        return []
    header = [h.strip() for h in reader[0]]
    types = []
    for col, key in enumerate(header, 1):
        types.append(check_target(document, registry, key, f"{path.name} line 1 column {col} {key!r}"))
    if len(set(header)) != len(header):
        raise SweepError(f"{path.name} line 1: a column appears twice")
    rows = []
    for lineno, cells in enumerate(reader[1:], 2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise SweepError(f"{path.name} line {lineno}: {len(cells)} fields, the header has {len(header)}")
        rows.append({key: parse_value(cell, t) for key, cell, t in zip(header, cells, types, strict=True)})
    return rows


def downstream_weight(document: dict) -> dict[str, tuple[int, int]]:
    """Per node: (how many nodes re-run when it changes, its topological depth)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(document)
    for nid, node in document.items():
        inputs = node.get("inputs", {}) if isinstance(node, dict) else {}
        for value in inputs.values() if isinstance(inputs, dict) else ():
            parts = link_parts(value) if isinstance(value, list) else None
            if parts and parts[0] in document:
                graph.add_edge(parts[0], nid)
    depth: dict[str, int] = {}
    try:
        for nid in nx.topological_sort(graph):
            depth[nid] = max((depth[p] + 1 for p in graph.predecessors(nid)), default=0)
    except nx.NetworkXUnfeasible:  # a cycle: validation reports it; keep the given order
        return {nid: (0, 0) for nid in document}
    return {nid: (len(nx.descendants(graph, nid)) + 1, depth[nid]) for nid in document}


def order_axes(keys: Iterable[str], document: dict) -> list[str]:
    """Upstream axes first (outermost): the axis whose change re-runs the most nodes varies slowest."""
    weight = downstream_weight(document)
    keys = list(keys)
    position = {k: i for i, k in enumerate(keys)}

    def sort_key(key: str):
        node_id = key.rpartition(".")[0]
        runs, depth = weight.get(node_id, (0, 0))
        return (-runs, depth, position[key])

    return sorted(keys, key=sort_key)


def expand_jobs(document: dict, sweeps: list[tuple[str, list[Any]]],
                rows: list[dict[str, Any]] | None = None) -> list[Job]:
    """The product of the sweep axes (times the rows of a params file), ordered for cache reuse.

    Duplicate parameter sets collapse into one job.
    """
    axes: dict[str, list[Any]] = {}
    for key, values in sweeps:
        if key in axes:
            raise SweepError(f"--sweep {key}: the same input is swept twice")
        axes[key] = values
    rows = rows if rows else [{}]
    overlap = {k for row in rows for k in row} & set(axes)
    if overlap:
        raise SweepError(f"--sweep {sorted(overlap)[0]}: also set by the params file")
    total = len(rows)
    for values in axes.values():
        total *= len(values)
    if total > MAX_JOBS:
        raise SweepError(f"the sweep makes {total} jobs (at most {MAX_JOBS})")
    all_keys = list(dict.fromkeys([*axes, *(k for row in rows for k in row)]))
    ordered = order_axes(all_keys, document)
    combos = []
    for row in rows:
        for values in itertools.product(*axes.values()):
            combos.append({**row, **dict(zip(axes, values, strict=True))})
    if len(rows) > 1:  # file rows come in any order: group equal upstream values together
        rank = {k: i for i, k in enumerate(ordered)}
        combos.sort(key=lambda p: [json.dumps(p.get(k), sort_keys=True, default=str) for k in ordered
                                   if k in p and rank[k] < len(ordered) - 1])
    else:
        # one axis set: the product in axis order, upstream axes outermost
        sweep_order = [k for k in ordered if k in axes]
        combos = [{**rows[0], **dict(zip(sweep_order, values, strict=True))}
                  for values in itertools.product(*(axes[k] for k in sweep_order))]
    jobs: dict[str, Job] = {}
    for params in combos:
        ordered_params = {k: params[k] for k in ordered if k in params}
        job = make_job(ordered_params)
        jobs.setdefault(job.id, job)
    return list(jobs.values())


def apply_params(document: dict, params: dict[str, Any]) -> dict:
    """A copy of ``document`` with the job's assignments applied."""
    doc = json.loads(json.dumps(document))
    for key, value in params.items():
        node_id, name = key.rsplit(".", 1)
        doc[node_id].setdefault("inputs", {})[name] = value
    return doc

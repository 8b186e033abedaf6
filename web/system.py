"""Figures for /system_stats, read without importing torch (a server starts fast and small)."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return ""


def memory() -> tuple[int, int]:
    """(total, available) RAM in bytes."""
    try:
        import psutil  # optional

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pass
    total = free = 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                value = int(rest.split()[0]) * 1024
                if key == "MemTotal":
                    total = value
                elif key == "MemAvailable":
                    free = value
    except (OSError, ValueError, IndexError):
        pass
    return total, free


def devices() -> list[dict]:
    """The compute devices; CUDA details only once torch is loaded (a prompt has run), never importing it here."""
    torch = sys.modules.get("torch")
    out: list[dict] = []
    if torch is not None:
        try:
            if torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    free, total = torch.cuda.mem_get_info(i)
                    reserved = torch.cuda.memory_reserved(i)
                    allocated = torch.cuda.memory_allocated(i)
                    out.append({"name": f"cuda:{i} {torch.cuda.get_device_name(i)}", "type": "cuda", "index": i,
                                "vram_total": total, "vram_free": free, "torch_vram_total": reserved,
                                "torch_vram_free": reserved - allocated})
        except Exception:
            out = []
    if not out:
        total, free = memory()
        out.append({"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                    "torch_vram_total": total, "torch_vram_free": free})
    return out


def system_stats(server_limits: dict | None = None) -> dict:
    """ComfyUI's answer, plus ``limits``: the cost limits in force (graph_runtime.limits) and the server's."""
    from graph_runtime.limits import LIMITS

    total, free = memory()
    return {
        "limits": {**LIMITS.as_dict(), **(server_limits or {})},
        "system": {
            "os": os.name if os.name != "posix" else sys.platform,
            "ram_total": total,
            "ram_free": free,
            # the editor shows this as the core's version (About, error reports): name this project
            "comfyui_version": f"graph-runtime {_version('graph-runtime') or '(not installed)'}",
            "graph_runtime_version": _version("graph-runtime"),
            "required_frontend_version": _version("comfyui-frontend-package"),
            "installed_templates_version": "",
            "required_templates_version": "",
            "python_version": sys.version,
            "pytorch_version": _version("torch"),
            "embedded_python": False,
            "argv": sys.argv,
            "platform": platform.platform(),
        },
        "devices": devices(),
    }

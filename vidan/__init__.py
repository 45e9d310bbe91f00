"""vidan: what is seen, heard and said in every segment of every video, as parquet reports.

    import vidan
    summary = vidan.analyze(["videos/"], out="reports/")
    rep = vidan.load_report("reports/")          # a vidan.Report: videos, segments (pandas), tags(), search(), ...
    hits = vidan.search("a cup of coffee", "reports/")
"""

__version__ = "0.1.0"

# The names load on first use: `python -m vidan ...` and the worker processes that import
# one submodule do not pay for pandas, pyarrow and the pipeline they do not need.
_EXPORTS = {"analyze": "vidan.api", "tag": "vidan.api", "Config": "vidan.config", "Report": "vidan.report",
            "load_report": "vidan.report"}
# `search` is also a submodule's name: importing vidan.search would set the package
# attribute to the module and hide a lazy name, so the function is bound here, eagerly.
from vidan.search import search  # noqa: E402

__all__ = ["analyze", "tag", "load_report", "Report", "search", "Config", "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vidan' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))

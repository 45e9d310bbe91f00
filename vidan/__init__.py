"""vidan: what is seen, heard and said in every segment of every video, as parquet reports.

    import vidan
    summary = vidan.analyze(["videos/"], out="reports/")
    rep = vidan.load_report("reports/")          # a vidan.Report: videos, segments (pandas), tags(), search(), ...
    hits = vidan.search("a cup of coffee", "reports/")
"""

__version__ = "0.1.0"

from vidan.api import analyze  # noqa: E402
from vidan.config import Config  # noqa: E402
from vidan.report import Report, load_report  # noqa: E402
from vidan.search import search  # noqa: E402

__all__ = ["analyze", "load_report", "Report", "search", "Config", "__version__"]

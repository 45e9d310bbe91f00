"""vidan: what is seen, heard and said in every segment of every video, as parquet reports.

    import vidan
    summary = vidan.analyze(["videos/"], out="reports/")
    rep = vidan.load_report("reports/")          # rep.videos, rep.segments, rep.skipped (pandas)
    hits = vidan.search("a cup of coffee", "reports/")
"""

__version__ = "0.1.0"

from vidan.api import analyze  # noqa: E402
from vidan.config import Config  # noqa: E402
from vidan.report import load_report  # noqa: E402
from vidan.search import search  # noqa: E402

__all__ = ["analyze", "load_report", "search", "Config", "__version__"]

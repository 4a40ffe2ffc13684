"""The study report: figures and tables side by side with the reference study (PAPER.md).

from symscale.report import write_report
write_report("studies/quickstart")      # -> studies/quickstart/report/report.html (+ report.md, PNGs)
"""

from symscale.report.render import StudyData, load_study, write_report

__all__ = ["StudyData", "load_study", "write_report"]

"""The labeling workflow: a project of one's own unlabeled images, queried a batch at a time, labeled by people in a
labeling tool (Label Studio, or anything that writes CSV or COCO) and imported back.

    from influal.project import Project
    project = Project.init("birds", task="classification", images="photos/", classes=["crow", "gull"])
    project.query("random", budget=50)          # cold start: no labels yet
    project.import_labels("export.json")        # Label Studio's JSON export
    project.query("isal", budget=50)            # trains on the labels, scores every unlabeled image
    print("\\n".join(project.status()["lines"]))
"""

from .merge import LabelImportError
from .project import Project
from .query import QueryRequest

__all__ = ["LabelImportError", "Project", "QueryRequest"]

"""The vocabulary of the reading forms: the ICDR grades, the radiograph findings, the explanation questions,
confidence and Likert scales, and the names of assistance events.

Kept in one place: the reading room shows them, reader studies choose among them, exports name them by key.
"""

from __future__ import annotations

from typing import Final

# International Clinical Diabetic Retinopathy scale (Wilkinson et al., Ophthalmology 2003), as graded in
# Sayres et al., Ophthalmology 2019.
ICDR_GRADES: Final = (
    (0, "none", "No apparent retinopathy"),
    (1, "mild", "Mild NPDR"),
    (2, "moderate", "Moderate NPDR"),
    (3, "severe", "Severe NPDR"),
    (4, "pdr", "Proliferative DR"),
)
CONFIDENCE: Final = ((1, "Very low"), (2, "Low"), (3, "Moderate"), (4, "High"), (5, "Very high"))
FINDINGS: Final = (
    ("nodule", "Nodule"),
    ("no_nodule", "No nodule"),
    ("other", "Other finding"),
)
RATING_QUESTIONS: Final = (
    ("relevant", "Highlights the clinically relevant features"),
    ("trust", "Would increase my trust in the prediction"),
    ("misleading", "Is distracting or misleading"),
)
LIKERT: Final = ((1, "Strongly disagree"), (2, "Disagree"), (3, "Neutral"), (4, "Agree"), (5, "Strongly agree"))
# Ophthalmic photography (OP) and external-camera photographs (XC) are graded for DR; everything else gets
# the finding form.
FUNDUS_MODALITIES: Final = frozenset({"OP", "XC"})
ASSISTANCE_EVENTS: Final = (
    "shown",
    "hidden",
    "method_changed",
    "opacity_changed",
    "colormap_changed",
    "threshold_changed",
    "grid_shown",
    "grid_hidden",
)
# Questions each form asks, and which of them a submitted read must answer.
FORM_FIELDS: Final = {"dr": ("dr_grade", "dme", "confidence"), "finding": ("finding", "confidence")}


def form_for(modality: str) -> str:
    """The grading form of an image of this modality (or study modalities joined by '/')."""
    return "dr" if FUNDUS_MODALITIES & set(modality.upper().split("/")) else "finding"


def method_label(method: str) -> str:
    """'integrated_gradients' -> 'Integrated gradients'; GradCAM-family names keep their capitals."""
    special = {"gradcam": "Grad-CAM", "gradcam_plus_plus": "Grad-CAM++", "gradcampp": "Grad-CAM++"}
    if method in special:
        return special[method]
    text = method.replace("_", " ").strip()
    return text[:1].upper() + text[1:]

"""The vocabulary of the reading forms: the ICDR grades, the radiograph findings, the explanation questions,
confidence and Likert scales, and the names of assistance events.

Kept in one place: the reading room shows them, reader studies choose among them, exports name them by key.
"""

from __future__ import annotations

from collections.abc import Sequence
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
# The chest-radiograph form's findings, and the generic form's for any other image (a shoulder MR is asked
# whether it shows a finding, never about nodules). A binary-finding study that names its finding asks "Effusion
# present?" with the presence answers (its reads and reference hold their keys); one made before studies named
# their finding keeps the chest form. FINDINGS: every finding a stored read may hold.
CHEST_FINDINGS: Final = (
    ("nodule", "Nodule"),
    ("no_nodule", "No nodule"),
    ("other", "Other finding"),
)
GENERIC_FINDINGS: Final = (
    ("present", "Finding present"),
    ("absent", "No finding"),
)
PRESENT: Final = "present"
ABSENT: Final = "absent"
PRESENCE: Final = ((PRESENT, "Present"), (ABSENT, "Absent"))
FINDINGS: Final = CHEST_FINDINGS + GENERIC_FINDINGS  # GENERIC_FINDINGS holds the presence keys too
RATING_QUESTIONS: Final = (
    ("relevant", "Highlights the clinically relevant features"),
    ("trust", "Would increase my trust in the prediction"),
    ("misleading", "Is distracting or misleading"),
)
LIKERT: Final = ((1, "Strongly disagree"), (2, "Disagree"), (3, "Neutral"), (4, "Agree"), (5, "Strongly agree"))
# Ophthalmic photography (OP) and external-camera photographs (XC) in colour are graded for DR; chest radiographs
# (CR, DX) and chest CT, of the chest or of a body part left unsaid, get the chest findings (lung nodules are
# read on both); everything else (a shoulder MR, an abdominal CT) the generic finding form.
FUNDUS_MODALITIES: Final = frozenset({"OP", "XC"})
FUNDUS_BODY_PARTS: Final = frozenset({"", "EYE"})
RADIOGRAPH_MODALITIES: Final = frozenset({"CR", "DX"})
CHEST_BODY_PARTS: Final = frozenset({"", "CHEST"})
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
# Questions each form asks, and which of them a submitted read must answer; the findings each form offers.
FORM_FIELDS: Final = {
    "dr": ("dr_grade", "dme", "confidence"),
    "finding": ("finding", "confidence"),
    "generic": ("finding", "confidence"),
    "presence": ("finding", "confidence"),
}
FINDINGS_OF_FORM: Final = {"finding": CHEST_FINDINGS, "generic": GENERIC_FINDINGS, "presence": PRESENCE}
# What a reader study of each task reads (app/reader_studies refuses other cases when they are added), and in
# words for the reason of a refusal. An explanation-rating study rates the maps of any image.
TASK_IMAGES: Final = {"dr_grading": "fundus", "binary_finding": "chest_radiograph"}
IMAGE_WORDS: Final = {
    "fundus": "a colour fundus photograph (OP or XC)",
    "chest_radiograph": "a chest radiograph (CR or DX of the chest)",
    "chest_ct": "a chest CT",
    "other": "neither a fundus photograph nor a chest image",
}
TASK_WORDS: Final = {
    "dr_grading": "DR grading",
    "binary_finding": "binary finding",
    "explanation_rating": "explanation rating",
}


def image_kind(modality: str, body_part: str = "", *, colour: bool | None = None) -> str:
    """'fundus', 'chest_radiograph', 'chest_ct' or 'other' for an image of this modality (or study modalities
    joined by '/') and body part; `colour` False rules out a fundus photograph (a grayscale PNG sent as OP)."""
    modalities = set(modality.upper().split("/"))
    part = body_part.strip().upper()
    if modalities & FUNDUS_MODALITIES and part in FUNDUS_BODY_PARTS and colour is not False:
        return "fundus"
    if part in CHEST_BODY_PARTS and modalities & RADIOGRAPH_MODALITIES:
        return "chest_radiograph"
    if part in CHEST_BODY_PARTS and "CT" in modalities:
        return "chest_ct"
    return "other"


def form_for(modality: str, body_part: str = "") -> str:
    """The read form of an image of this modality and body part: 'dr', 'finding' (chest) or 'generic'."""
    kind = image_kind(modality, body_part)
    return "dr" if kind == "fundus" else "finding" if kind.startswith("chest") else "generic"


def task_accepts(task: str, kind: str) -> bool:
    """Whether a reader study of this task reads an image of this kind (image_kind)."""
    wanted = TASK_IMAGES.get(task)
    return wanted is None or wanted == kind


def study_form(task: str, finding: str = "") -> str:
    """The read form of a reader study: 'dr', 'presence' (a binary-finding study that names its finding), 'finding'
    (one that does not: made before studies named it, it keeps the nodule form its reads were given) or 'rating'."""
    if task == "binary_finding":
        return "presence" if finding else "finding"
    return {"dr_grading": "dr", "explanation_rating": "rating"}[task]


def positive_finding(finding: str) -> str:
    """The answer that counts as positive in a binary-finding study of this finding: `present`, or `nodule` in a
    study that names none (the nodule form)."""
    return PRESENT if finding else CHEST_FINDINGS[0][0]


def finding_words(finding: str) -> str:
    """A finding as a reader reads it: 'pleural_thickening' -> 'Pleural thickening'."""
    text = " ".join(finding.replace("_", " ").split())
    return text[:1].upper() + text[1:]


def finding_question(finding: str) -> str:
    """What the presence form asks: 'Effusion present?'."""
    return f"{finding_words(finding)} present?"


def _same_finding(text: str) -> str:
    return " ".join(text.replace("_", " ").split()).casefold()


def label_index(labels: Sequence[str], finding: str) -> int | None:
    """Where a model reports this finding among its labels ('Pleural_Thickening' is 'pleural thickening'), or None
    where it does not: the AI then has no probability of the finding to show."""
    wanted = _same_finding(finding)
    return next((index for index, label in enumerate(labels) if wanted and _same_finding(label) == wanted), None)


def method_label(method: str) -> str:
    """'integrated_gradients' -> 'Integrated gradients'; GradCAM-family names keep their capitals."""
    special = {"gradcam": "Grad-CAM", "gradcam_plus_plus": "Grad-CAM++", "gradcampp": "Grad-CAM++"}
    if method in special:
        return special[method]
    text = method.replace("_", " ").strip()
    return text[:1].upper() + text[1:]

"""Lumen's results as DICOM objects a PACS files under the patient's study: a Parametric Map per heatmap, a
Structured Report of the prediction and a Secondary Capture overlay (objects.py, written with highdicom), pushed to
the configured destination when a job finishes (push.py) and downloadable as a zip (router.py, service.py).

Only for images that came in as DICOM: a PNG or JPEG upload has no DICOM study to attach results to.
"""

"""DICOM networking (DIMSE): the C-STORE listener through which a modality or a PACS sends studies to Lumen."""

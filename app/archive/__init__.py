"""Cases from the hospital's archive: search a configured DICOMweb source (QIDO-RS), import the chosen studies
(WADO-RS) through the same checks as an upload, and add them to a reader study."""

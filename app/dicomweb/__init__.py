"""DICOMweb (PS3.18) on Lumen's store: QIDO-RS search, WADO-RS retrieve and STOW-RS store under /dicomweb, so a
PACS, a viewer such as OHIF or dicomweb-client talk to Lumen as to any archive (docs/interoperability.md)."""

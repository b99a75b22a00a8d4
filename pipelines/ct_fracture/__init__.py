"""``ct_fracture``: bone segmentation, fracture detection and fracture typing in CT (patent 002)."""

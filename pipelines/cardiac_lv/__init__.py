"""``cardiac_lv``: left-ventricle quantification and cardiac phase from short-axis cine MR (patent 001)."""

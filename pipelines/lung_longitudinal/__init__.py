"""Lung CT quantification and change over time (patent 003): normal lung first, abnormal = ROI − normal."""

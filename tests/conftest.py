import os

# Figures in tests and notebooks never need a display.
os.environ.setdefault("MPLBACKEND", "Agg")

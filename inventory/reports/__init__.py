"""Reports for a hospital: figures per department over a range of visit dates
(figures.py), read from the durable record (inventory/record/reports.py), rendered as
JSON, CSV and plots (render.py)."""

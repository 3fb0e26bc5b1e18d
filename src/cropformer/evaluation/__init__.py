"""Evaluation: class-agnostic entity AP, boundary AP, RLE helpers and prediction writers."""

"""Face detection, landmarks, alignment, quality and embedding."""

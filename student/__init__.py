"""What a student does: the learning loop and one module per algorithm (DESIGN.md section 4)."""

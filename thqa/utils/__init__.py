"""Small shared tools: atomic outputs and locks, CPU facts, memory release, option hints and choices, deprecation."""

"""Stage 2: torch/Norse models -> NIR graphs, NIR reading and validation."""

"""Layer (a): the formats and the golden model. Imports nothing else of the project."""

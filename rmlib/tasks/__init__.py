"""The paper's tasks: how each section's data is built (graphs, Persona pairs, real preference data)."""

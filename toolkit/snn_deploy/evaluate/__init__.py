"""Stage 5: accuracy, spikes, synaptic operations and priced energy of a model on a backend; reports."""

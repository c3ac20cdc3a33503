"""Stage 5: accuracy, spike counts and synaptic operations of a model on a backend; reports."""

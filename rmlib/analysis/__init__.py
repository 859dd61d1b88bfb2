"""What the book computes from trained models and their stored rewards: learning dynamics, the max-margin
separator, per-token log-probability changes, statistics and the comparisons with the paper's claims."""

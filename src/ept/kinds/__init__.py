"""One module per backbone kind (encoder, seq2seq, causal)."""
